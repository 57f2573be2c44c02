//! Clients of the suite, as a real one behaves: every call goes through the
//! gateway with a bearer token; every change carries an `Idempotency-Key`
//! and is sent again, with the same key and the same bytes, after a
//! connection error, a timeout, a 5xx, a 429 or a 409 "key in use", until
//! it gets an answer or its deadline passes. What each operation was told
//! is written to the [`Ledger`], which the checker compares with the
//! stores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{header, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::RwLock;
use uuid::Uuid;

const BOUNDARY: &str = "tramita-chaos-boundary-5f2b9e";
/// One HTTP exchange may take this long (longer than the gateway's own
/// timeout with its retries, so the gateway answers first when it can),
/// and never past the operation's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST /docs/uploads` (a staged upload for a new file).
    StageUpload,
    /// `POST /files` naming a staged upload (starts the create-file saga).
    CreateFile,
    /// `POST /docs/files/{id}/documents` (a new document or a new version).
    AddDocument,
    /// `POST /bpm/processes/{id}/transitions` with `If-Match`.
    ChangePhase,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 4] = [
        Kind::StageUpload,
        Kind::CreateFile,
        Kind::AddDocument,
        Kind::ChangePhase,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::StageUpload => "stage_upload",
            Kind::CreateFile => "create_file",
            Kind::AddDocument => "add_document",
            Kind::ChangePhase => "change_phase",
        }
    }
}

/// What the client was finally told.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A success: the change is acknowledged.
    Acknowledged {
        /// The status.
        status: u16,
    },
    /// A definitive refusal (4xx other than those retried).
    Refused {
        /// The status.
        status: u16,
        /// The problem's type or the body's start.
        detail: String,
    },
    /// No answer before the operation's deadline: the client does not
    /// know whether it happened.
    Unknown {
        /// The last error seen.
        last_error: String,
    },
}

/// One operation, and what it must have left behind.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// Unique id; written into the change itself (description, content,
    /// comment), so the stores can be searched for it.
    pub id: Uuid,
    /// What it is.
    pub kind: Kind,
    /// `stream` or `probe` (the recovery probe).
    pub source: &'static str,
    /// Its `Idempotency-Key`.
    pub key: Uuid,
    /// How many times it was sent.
    pub attempts: u32,
    /// What the client was told.
    pub outcome: Outcome,
    /// The file it concerns (the created file, once acknowledged).
    pub file_id: Option<Uuid>,
    /// Stage upload: the upload id acknowledged.
    pub upload_id: Option<Uuid>,
    /// Add document: the document id acknowledged.
    pub document_id: Option<Uuid>,
    /// Add document: the version number acknowledged.
    pub version: Option<u32>,
    /// Stage upload and add document: SHA-256 of the content sent.
    pub sha256: Option<String>,
    /// Change phase: the phase asked for.
    pub to_phase: Option<String>,
    /// Change phase: the process version acknowledged.
    pub process_version: Option<i64>,
}

impl Operation {
    /// A new operation of `kind`, not sent yet.
    pub(crate) fn new(kind: Kind, source: &'static str) -> Self {
        Self {
            id: Uuid::new_v4(),
            kind,
            source,
            key: Uuid::new_v4(),
            attempts: 0,
            outcome: Outcome::Unknown {
                last_error: "not sent".into(),
            },
            file_id: None,
            upload_id: None,
            document_id: None,
            version: None,
            sha256: None,
            to_phase: None,
            process_version: None,
        }
    }

    /// Whether the client was told it succeeded.
    pub fn acknowledged(&self) -> bool {
        matches!(self.outcome, Outcome::Acknowledged { .. })
    }

    /// The text that marks this operation's change in the stores.
    pub fn marker(&self) -> String {
        format!("chaos {}", self.id)
    }
}

/// Every operation of the run, as its client recorded it.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    operations: Arc<Mutex<Vec<Operation>>>,
    retries: Arc<Mutex<RetryCounts>>,
}

/// Why requests were sent again, counted over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryCounts {
    /// Connection refused, reset, timed out.
    pub transport: u64,
    /// 500-599 answers.
    pub server_error: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 409 `idempotency-key-in-use`.
    pub key_in_use: u64,
    /// 401 (signed in again).
    pub unauthorized: u64,
}

impl Ledger {
    fn record(&self, operation: Operation) {
        self.operations.lock().expect("ledger lock").push(operation);
    }

    /// A copy of every operation recorded so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations.lock().expect("ledger lock").clone()
    }

    /// Retry counts so far.
    pub fn retries(&self) -> RetryCounts {
        self.retries.lock().expect("retry lock").clone()
    }

    fn count(&self, what: impl FnOnce(&mut RetryCounts)) {
        what(&mut self.retries.lock().expect("retry lock"));
    }
}

/// A final answer: status, headers we use, body.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

/// The result of a retried exchange.
enum Exchange {
    Answered(Answer),
    GaveUp(String),
}

/// A signed-in client of the gateway.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    username: String,
    password: String,
    token: Arc<RwLock<Option<String>>>,
    ledger: Ledger,
    /// How long one operation keeps trying.
    pub deadline: Duration,
}

impl Client {
    /// A client of the gateway at `gateway` (`http://127.0.0.1:port`),
    /// signing in as `username`.
    pub fn new(
        gateway: &str,
        username: &str,
        password: &str,
        ledger: Ledger,
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(REQUEST_TIMEOUT)
                .build()?,
            base: format!("{gateway}/api/v1"),
            username: username.to_owned(),
            password: password.to_owned(),
            token: Arc::new(RwLock::new(None)),
            ledger,
            deadline,
        })
    }

    /// Signs in (password grant), trying until `until`.
    async fn sign_in(&self, until: Instant) -> Result<String, String> {
        let mut attempt = 0u32;
        loop {
            let response = self
                .http
                .post(format!("{}/auth/token", self.base))
                .form(&[
                    ("grant_type", "password"),
                    ("username", self.username.as_str()),
                    ("password", self.password.as_str()),
                ])
                .send()
                .await;
            let error = match response {
                Ok(response) if response.status().is_success() => {
                    let body: Value = response.json().await.map_err(|e| e.to_string())?;
                    let token = body["access_token"]
                        .as_str()
                        .ok_or("no access_token")?
                        .to_owned();
                    *self.token.write().await = Some(token.clone());
                    return Ok(token);
                }
                Ok(response) => format!("sign-in answered {}", response.status()),
                Err(error) => format!("sign-in: {error}"),
            };
            attempt += 1;
            if Instant::now() + backoff(attempt) >= until {
                return Err(error);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn token(&self, until: Instant) -> Result<String, String> {
        if let Some(token) = self.token.read().await.clone() {
            return Ok(token);
        }
        self.sign_in(until).await
    }

    /// Sends the request `build` makes (given the token) until it gets an
    /// answer that is not worth retrying, or `until` passes.
    async fn exchange(
        &self,
        until: Instant,
        attempts: &mut u32,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Exchange {
        let mut last_error;
        loop {
            let token = match self.token(until).await {
                Ok(token) => token,
                Err(error) => return Exchange::GaveUp(error),
            };
            *attempts += 1;
            let left = until
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), REQUEST_TIMEOUT);
            let sent = match build(&self.http, &token).timeout(left).send().await {
                // A body cut off is no answer: the request is sent again.
                Ok(response) => {
                    let status = response.status();
                    let etag = response
                        .headers()
                        .get(header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    response.bytes().await.map(|bytes| (status, etag, bytes))
                }
                Err(error) => Err(error),
            };
            match sent {
                Ok((status, etag, bytes)) => {
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&bytes).chars().take(200).collect())
                    });
                    let problem = body["type"].as_str().unwrap_or_default().to_owned();
                    if status == StatusCode::UNAUTHORIZED {
                        self.ledger.count(|c| c.unauthorized += 1);
                        *self.token.write().await = None;
                        last_error = "401".to_owned();
                    } else if status.is_server_error() {
                        self.ledger.count(|c| c.server_error += 1);
                        last_error = format!("{status}: {problem}");
                    } else if status == StatusCode::TOO_MANY_REQUESTS {
                        self.ledger.count(|c| c.rate_limited += 1);
                        last_error = "429".to_owned();
                    } else if status == StatusCode::CONFLICT
                        && problem.ends_with("/idempotency-key-in-use")
                    {
                        self.ledger.count(|c| c.key_in_use += 1);
                        last_error = "409 idempotency-key-in-use".to_owned();
                    } else {
                        return Exchange::Answered(Answer { status, etag, body });
                    }
                }
                Err(error) => {
                    self.ledger.count(|c| c.transport += 1);
                    last_error = format!("transport: {error}");
                }
            }
            let wait = backoff(*attempts);
            if Instant::now() + wait >= until {
                return Exchange::GaveUp(last_error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Ends `operation` with `exchange`'s outcome (`on_success` reads
    /// the acknowledged ids) and records it.
    fn settle(
        &self,
        mut operation: Operation,
        exchange: &Exchange,
        on_success: impl FnOnce(&mut Operation, &Answer),
    ) -> Operation {
        operation.outcome = match exchange {
            Exchange::Answered(answer) if answer.status.is_success() => {
                on_success(&mut operation, answer);
                Outcome::Acknowledged {
                    status: answer.status.as_u16(),
                }
            }
            Exchange::Answered(answer) => Outcome::Refused {
                status: answer.status.as_u16(),
                detail: answer.body["type"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| answer.body.to_string().chars().take(200).collect()),
            },
            Exchange::GaveUp(error) => Outcome::Unknown {
                last_error: error.clone(),
            },
        };
        self.ledger.record(operation.clone());
        operation
    }

    /// Stages an upload whose content names the operation.
    pub async fn stage_upload(&self, source: &'static str) -> Operation {
        let mut operation = Operation::new(Kind::StageUpload, source);
        let content = pdf(operation.id);
        operation.sha256 = Some(hex::encode(sha2::Sha256::digest(&content)));
        let body = multipart(&format!("solicitud-{}.pdf", operation.id), &content);
        let until = Instant::now() + self.deadline;
        let url = format!("{}/docs/uploads", self.base);
        let mut attempts = 0;
        let key = operation.key.to_string();
        let exchange = self
            .exchange(until, &mut attempts, |http, token| {
                http.post(&url)
                    .bearer_auth(token)
                    .header("idempotency-key", &key)
                    .header(
                        header::CONTENT_TYPE,
                        format!("multipart/form-data; boundary={BOUNDARY}"),
                    )
                    .body(body.clone())
            })
            .await;
        operation.attempts = attempts;
        self.settle(operation, &exchange, |op, answer| {
            op.upload_id = uuid_at(&answer.body, "id");
        })
    }

    /// Creates a file naming `upload` (its description names the
    /// operation).
    pub async fn create_file(&self, source: &'static str, upload: Uuid) -> Operation {
        let mut operation = Operation::new(Kind::CreateFile, source);
        operation.upload_id = Some(upload);
        let body = json!({
            "initial_option": "Sede electrónica",
            "description": operation.marker(),
            "first_document": {"upload_id": upload},
        });
        let until = Instant::now() + self.deadline;
        let url = format!("{}/files", self.base);
        let mut attempts = 0;
        let key = operation.key.to_string();
        let exchange = self
            .exchange(until, &mut attempts, |http, token| {
                http.post(&url)
                    .bearer_auth(token)
                    .header("idempotency-key", &key)
                    .json(&body)
            })
            .await;
        operation.attempts = attempts;
        self.settle(operation, &exchange, |op, answer| {
            op.file_id = uuid_at(&answer.body, "id");
        })
    }

    /// Adds a document named `name` to `file` with content naming the
    /// operation (a new version when the file has one with that name).
    pub async fn add_document(&self, file: Uuid, name: &str) -> Operation {
        let mut operation = Operation::new(Kind::AddDocument, "stream");
        operation.file_id = Some(file);
        let content = pdf(operation.id);
        let sha = hex::encode(sha2::Sha256::digest(&content));
        operation.sha256 = Some(sha.clone());
        let body = multipart(name, &content);
        let until = Instant::now() + self.deadline;
        let url = format!("{}/docs/files/{file}/documents", self.base);
        let mut attempts = 0;
        let key = operation.key.to_string();
        let exchange = self
            .exchange(until, &mut attempts, |http, token| {
                http.post(&url)
                    .bearer_auth(token)
                    .header("idempotency-key", &key)
                    .header(
                        header::CONTENT_TYPE,
                        format!("multipart/form-data; boundary={BOUNDARY}"),
                    )
                    .body(body.clone())
            })
            .await;
        operation.attempts = attempts;
        self.settle(operation, &exchange, |op, answer| {
            op.document_id = uuid_at(&answer.body, "id");
            op.version = answer.body["versions"].as_array().and_then(|versions| {
                versions
                    .iter()
                    .find(|v| v["sha256"].as_str() == Some(sha.as_str()))
                    .and_then(|v| v["number"].as_u64())
                    .and_then(|n| u32::try_from(n).ok())
            });
        })
    }

    /// Reads `file`'s process and takes one of the transitions offered
    /// (never into `finished`, so the file stays open), with `If-Match`
    /// and a comment naming the operation. `None` when nothing could be
    /// read or nothing is offered (no operation then).
    pub async fn change_phase(&self, file: Uuid) -> Option<Operation> {
        let until = Instant::now() + self.deadline;
        let url = format!("{}/bpm/processes/{file}", self.base);
        let mut reads = 0;
        let Exchange::Answered(process) = self
            .exchange(until, &mut reads, |http, token| {
                http.get(&url).bearer_auth(token)
            })
            .await
        else {
            return None;
        };
        if !process.status.is_success() {
            return None;
        }
        let etag = process.etag.clone()?;
        let offered: Vec<String> = process.body["available_transitions"]
            .as_array()?
            .iter()
            .filter_map(|t| t["to"]["key"].as_str())
            .filter(|key| *key != "finished")
            .map(str::to_owned)
            .collect();
        if offered.is_empty() {
            return None;
        }
        let to = offered[rand::rng().random_range(0..offered.len())].clone();
        let mut operation = Operation::new(Kind::ChangePhase, "stream");
        operation.file_id = Some(file);
        operation.to_phase = Some(to.clone());
        let body = json!({"to": to, "comment": operation.marker()});
        let url = format!("{url}/transitions");
        let mut attempts = 0;
        let key = operation.key.to_string();
        let exchange = self
            .exchange(until, &mut attempts, |http, token| {
                http.post(&url)
                    .bearer_auth(token)
                    .header("idempotency-key", &key)
                    .header(header::IF_MATCH, &etag)
                    .json(&body)
            })
            .await;
        operation.attempts = attempts;
        Some(self.settle(operation, &exchange, |op, answer| {
            op.process_version = answer.body["version"].as_i64();
        }))
    }

    /// The status of `file` as `files` tells it (`pending`, `active`,
    /// `failed`, ...), or `None` if it could not be read in `within`.
    pub async fn file_status(&self, file: Uuid, within: Duration) -> Option<String> {
        let until = Instant::now() + within;
        let url = format!("{}/files/{file}", self.base);
        let mut attempts = 0;
        match self
            .exchange(until, &mut attempts, |http, token| {
                http.get(&url).bearer_auth(token)
            })
            .await
        {
            Exchange::Answered(answer) if answer.status.is_success() => {
                answer.body["status"].as_str().map(str::to_owned)
            }
            _ => None,
        }
    }

    /// The recovery probe: signs in afresh (auth), runs a whole
    /// create-file saga (gateway, docs, files, bpm, Kafka and the stores)
    /// and waits until the index shows the file active with its process,
    /// all within `within`. When each stage ended, or where it failed.
    pub async fn probe(&self, within: Duration) -> ProbeRun {
        let began = Instant::now();
        let until = began + within;
        let mut run = ProbeRun::default();
        let mark = |run: &mut ProbeRun, stage: &'static str| {
            run.stages_ms.push((stage, began.elapsed().as_millis()));
        };
        *self.token.write().await = None;
        if let Err(error) = self.sign_in(until).await {
            run.failed_at = Some(format!("sign-in: {error}"));
            return run;
        }
        mark(&mut run, "signed_in");
        let upload = self.stage_upload("probe").await;
        let Some(upload_id) = upload.upload_id.filter(|_| upload.acknowledged()) else {
            run.failed_at = Some(format!("upload: {:?}", upload.outcome));
            return run;
        };
        mark(&mut run, "uploaded");
        let created = self.create_file("probe", upload_id).await;
        let Some(file) = created.file_id.filter(|_| created.acknowledged()) else {
            run.failed_at = Some(format!("create: {:?}", created.outcome));
            return run;
        };
        mark(&mut run, "created");
        loop {
            if Instant::now() >= until {
                run.failed_at = Some(format!("file {file} not active within {within:?}"));
                return run;
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.file_status(file, left).await.as_deref() {
                Some("active") => break,
                Some("failed") => {
                    run.failed_at = Some(format!("file {file} failed"));
                    return run;
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        mark(&mut run, "active");
        let url = format!("{}/index/files/{file}", self.base);
        while Instant::now() < until {
            let mut attempts = 0;
            if let Exchange::Answered(answer) = self
                .exchange(until, &mut attempts, |http, token| {
                    http.get(&url).bearer_auth(token)
                })
                .await
            {
                if answer.status.is_success()
                    && answer.body["status"] == "active"
                    && answer.body["process"].is_object()
                {
                    mark(&mut run, "indexed");
                    return run;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        run.failed_at = Some(format!(
            "file {file} not active in the index within {within:?}"
        ));
        run
    }
}

/// One run of the recovery probe.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeRun {
    /// Each stage passed (`signed_in`, `uploaded`, `created`, `active`,
    /// `indexed`) and when, in ms from the run's start.
    pub stages_ms: Vec<(&'static str, u128)>,
    /// Where it failed, if it did.
    pub failed_at: Option<String>,
}

impl ProbeRun {
    /// Whether it went through to the index.
    pub fn passed(&self) -> bool {
        self.failed_at.is_none()
    }
}

/// Exponential backoff with jitter: 200 ms doubling to 3 s.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(4)).min(3000);
    Duration::from_millis(base / 2 + rand::rng().random_range(0..=base / 2))
}

fn uuid_at(body: &Value, field: &str) -> Option<Uuid> {
    body[field].as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// A small PDF whose content names `id` (so its SHA-256 is the operation's own).
fn pdf(id: Uuid) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    bytes.extend(
        format!("1 0 obj << /Chaos ({id}) >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
            .as_bytes(),
    );
    bytes
}

/// A multipart body with one part `file` named `name`, always the same
/// bytes for the same input (a retry resends exactly them).
fn multipart(name: &str, content: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(format!("--{BOUNDARY}\r\n").as_bytes());
    body.extend(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n")
            .as_bytes(),
    );
    body.extend(b"Content-Type: application/pdf\r\n\r\n");
    body.extend(content);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}
