//! The gateway's public API, as the seeder uses it: sign in, stage an
//! upload, open a file, read it, add a document, read and move its process,
//! and search the index. Every call goes through `/api/v1` on the gateway,
//! like the SPA's.

use std::time::Duration;

use reqwest::{header, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::SeedError;

/// How many times a call the gateway rate-limits (429) or finds its
/// upstream unavailable (503) is sent again.
const RETRIES: u32 = 8;

/// Boundary of the multipart bodies the seeder builds.
const BOUNDARY: &str = "tramita-seed-boundary-7d1f0c3a";

/// A client of the gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
}

/// A signed-in demo user.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who it is.
    pub username: String,
    token: String,
}

/// What `POST /files` answered.
#[derive(Debug)]
pub enum Opened {
    /// Accepted: the file (pending) with its id.
    Accepted(Uuid),
    /// The code is taken by a file already.
    CodeTaken,
}

/// A process as bpm shows it, reduced to what the seeder needs.
#[derive(Debug, Clone)]
pub struct Process {
    /// The phases entered by transitions, in order (the start and
    /// migrations to newer definition versions left out).
    pub moves: Vec<String>,
    /// The current phase's key.
    pub phase: String,
    /// Its version, for `If-Match`.
    pub version: i64,
}

impl Gateway {
    /// A client of the gateway at `base_url` (`http://host:port`).
    pub fn new(base_url: &str) -> Result<Self, SeedError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| SeedError::Unexpected {
                what: "building the HTTP client".into(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// Sends `request`, again after the wait the gateway asks for while it
    /// answers 429 or 503. Fails with `Unreachable` when nothing answers.
    async fn send(&self, what: &str, mut request: RequestBuilder) -> Result<Response, SeedError> {
        let mut attempt = 0;
        loop {
            let retry = request.try_clone();
            let response = request_or_unreachable(&self.base, what, request).await?;
            let status = response.status();
            let (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, Some(again)) =
                (status, retry)
            else {
                return Ok(response);
            };
            attempt += 1;
            if attempt > RETRIES {
                return Ok(response);
            }
            let wait = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_millis(250 * u64::from(attempt)), |s| {
                    Duration::from_secs(s.clamp(1, 10))
                });
            tokio::time::sleep(wait).await;
            request = again;
        }
    }

    fn authorised(&self, request: RequestBuilder, session: &Session) -> RequestBuilder {
        request.header(header::AUTHORIZATION, format!("Bearer {}", session.token))
    }

    /// Signs in as `username` with the password grant.
    pub async fn sign_in(&self, username: &str, password: &str) -> Result<Session, SeedError> {
        let what = format!("signing in as {username}");
        let request = self.http.post(self.url("/auth/token")).form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ]);
        let response = self.send(&what, request).await?;
        if !response.status().is_success() {
            let status = response.status();
            return Err(SeedError::SignIn {
                username: username.to_owned(),
                detail: format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    problem_detail(response).await
                ),
            });
        }
        let tokens: Value = json_body(&what, response).await?;
        let token = tokens["access_token"]
            .as_str()
            .ok_or_else(|| unexpected(&what, "no access_token in the answer"))?;
        Ok(Session {
            username: username.to_owned(),
            token: token.to_owned(),
        })
    }

    /// The initial options files accepts, in display order.
    pub async fn initial_options(&self, session: &Session) -> Result<Vec<String>, SeedError> {
        let what = "reading the initial options";
        let request = self.authorised(self.http.get(self.url("/files/initial-options")), session);
        let body = expect_json(what, self.send(what, request).await?, StatusCode::OK).await?;
        Ok(body["options"]
            .as_array()
            .ok_or_else(|| unexpected(what, "no options list"))?
            .iter()
            .filter_map(|o| o.as_str().map(str::to_owned))
            .collect())
    }

    /// The indexed files whose code or description matches `text` (the
    /// first 100, newest first), as the list shows them.
    pub async fn search_index(
        &self,
        session: &Session,
        text: &str,
    ) -> Result<Vec<Value>, SeedError> {
        let what = "searching the index";
        let request = self
            .authorised(self.http.get(self.url("/index/files")), session)
            .query(&[("q", text), ("limit", "100")]);
        let body = expect_json(what, self.send(what, request).await?, StatusCode::OK).await?;
        Ok(body["items"].as_array().cloned().unwrap_or_default())
    }

    /// The whole case of file `id` as the index holds it, if indexed.
    pub async fn indexed_file(
        &self,
        session: &Session,
        id: Uuid,
    ) -> Result<Option<Value>, SeedError> {
        let what = format!("reading file {id} from the index");
        let request = self.authorised(
            self.http.get(self.url(&format!("/index/files/{id}"))),
            session,
        );
        let response = self.send(&what, request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        expect_json(&what, response, StatusCode::OK).await.map(Some)
    }

    /// Stages `bytes` in docs as the upload `name` (`media_type`) and
    /// returns the upload's id.
    pub async fn stage_upload(
        &self,
        session: &Session,
        name: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Uuid, SeedError> {
        let what = format!("uploading {name}");
        let request = multipart(
            self.authorised(self.http.post(self.url("/docs/uploads")), session),
            name,
            media_type,
            bytes,
        );
        let body =
            expect_json(&what, self.send(&what, request).await?, StatusCode::CREATED).await?;
        id_of(&what, &body)
    }

    /// Asks files for a new file (`POST /files`) with the staged upload
    /// `upload` as its first document.
    pub async fn open_file(
        &self,
        session: &Session,
        code: &str,
        initial_option: &str,
        description: &str,
        procedure: &str,
        upload: Uuid,
    ) -> Result<Opened, SeedError> {
        let what = format!("creating file {code}");
        let request = self
            .authorised(self.http.post(self.url("/files")), session)
            // A retry of this very request (the gateway retries a POST
            // that carries a key) opens one file.
            .header("idempotency-key", format!("tramita-seed-{upload}"))
            .json(&json!({
                "code": code,
                "initial_option": initial_option,
                "description": description,
                "procedure": procedure,
                "first_document": {"upload_id": upload},
            }));
        let response = self.send(&what, request).await?;
        if response.status() == StatusCode::CONFLICT {
            return Ok(Opened::CodeTaken);
        }
        let body = expect_json(&what, response, StatusCode::ACCEPTED).await?;
        Ok(Opened::Accepted(id_of(&what, &body)?))
    }

    /// File `id` as files shows it (status, saga, failure reason).
    pub async fn file(&self, session: &Session, id: Uuid) -> Result<Value, SeedError> {
        let what = format!("reading file {id}");
        let request = self.authorised(self.http.get(self.url(&format!("/files/{id}"))), session);
        expect_json(&what, self.send(&what, request).await?, StatusCode::OK).await
    }

    /// The names of the documents of file `id` in docs.
    pub async fn document_names(
        &self,
        session: &Session,
        id: Uuid,
    ) -> Result<Vec<String>, SeedError> {
        let what = format!("listing the documents of file {id}");
        let request = self
            .authorised(
                self.http
                    .get(self.url(&format!("/docs/files/{id}/documents"))),
                session,
            )
            .query(&[("limit", "100")]);
        let body = expect_json(&what, self.send(&what, request).await?, StatusCode::OK).await?;
        Ok(body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Adds the document `name` to file `id`.
    pub async fn add_document(
        &self,
        session: &Session,
        id: Uuid,
        name: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), SeedError> {
        let what = format!("adding {name} to file {id}");
        let request = multipart(
            self.authorised(
                self.http
                    .post(self.url(&format!("/docs/files/{id}/documents"))),
                session,
            )
            .header(
                "idempotency-key",
                format!("tramita-seed-{id}-{}", Uuid::new_v4()),
            ),
            name,
            media_type,
            bytes,
        );
        expect_json(&what, self.send(&what, request).await?, StatusCode::CREATED)
            .await
            .map(|_| ())
    }

    /// The process of file `id`.
    pub async fn process(&self, session: &Session, id: Uuid) -> Result<Process, SeedError> {
        let what = format!("reading the process of file {id}");
        let request = self.authorised(
            self.http.get(self.url(&format!("/bpm/processes/{id}"))),
            session,
        );
        let body = expect_json(&what, self.send(&what, request).await?, StatusCode::OK).await?;
        process_of(&what, &body)
    }

    /// Moves the process of file `id`, at `version`, into phase `to` with
    /// `comment`.
    pub async fn transition(
        &self,
        session: &Session,
        id: Uuid,
        version: i64,
        to: &str,
        comment: &str,
    ) -> Result<Process, SeedError> {
        let what = format!("moving file {id} to {to} as {}", session.username);
        let request = self
            .authorised(
                self.http
                    .post(self.url(&format!("/bpm/processes/{id}/transitions"))),
                session,
            )
            .header(header::IF_MATCH, format!("\"{version}\""))
            .json(&json!({"to": to, "comment": comment}));
        let body = expect_json(&what, self.send(&what, request).await?, StatusCode::OK).await?;
        process_of(&what, &body)
    }
}

async fn request_or_unreachable(
    base: &str,
    what: &str,
    request: RequestBuilder,
) -> Result<Response, SeedError> {
    request.send().await.map_err(|error| {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        SeedError::Unreachable {
            url: base.to_owned(),
            what: what.to_owned(),
            reason,
        }
    })
}

/// `request` with a multipart body holding `bytes` as the part `file`.
fn multipart(
    request: RequestBuilder,
    name: &str,
    media_type: &str,
    bytes: &[u8],
) -> RequestBuilder {
    let mut body = Vec::with_capacity(bytes.len() + 256);
    body.extend(format!("--{BOUNDARY}\r\n").as_bytes());
    body.extend(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n")
            .as_bytes(),
    );
    body.extend(format!("Content-Type: {media_type}\r\n\r\n").as_bytes());
    body.extend(bytes);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    request
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
}

fn unexpected(what: &str, detail: impl Into<String>) -> SeedError {
    SeedError::Unexpected {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

/// The `detail` (or `title`) of a problem+json answer, else its text.
async fn problem_detail(response: Response) -> String {
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(problem) => {
            let mut detail = problem["detail"]
                .as_str()
                .or(problem["title"].as_str())
                .unwrap_or(&text)
                .to_owned();
            if let Some(errors) = problem["errors"].as_array() {
                for error in errors {
                    detail.push_str(&format!(
                        "; {}: {}",
                        error["field"].as_str().unwrap_or("?"),
                        error["message"].as_str().unwrap_or("?")
                    ));
                }
            }
            detail
        }
        Err(_) if text.trim().is_empty() => "no details".to_owned(),
        Err(_) => text.chars().take(300).collect(),
    }
}

async fn json_body(what: &str, response: Response) -> Result<Value, SeedError> {
    response
        .json()
        .await
        .map_err(|e| unexpected(what, format!("the answer is not JSON: {e}")))
}

/// The JSON body of `response` when its status is `expected`, else
/// `Refused` with the problem's detail.
async fn expect_json(
    what: &str,
    response: Response,
    expected: StatusCode,
) -> Result<Value, SeedError> {
    let status = response.status();
    if status != expected {
        return Err(SeedError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            detail: problem_detail(response).await,
        });
    }
    json_body(what, response).await
}

fn id_of(what: &str, body: &Value) -> Result<Uuid, SeedError> {
    body["id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| unexpected(what, "no id in the answer"))
}

fn process_of(what: &str, body: &Value) -> Result<Process, SeedError> {
    let history = body["history"]
        .as_array()
        .ok_or_else(|| unexpected(what, "no history in the process"))?;
    Ok(Process {
        moves: history
            .iter()
            .filter(|visit| visit["entry"] == "transition")
            .filter_map(|visit| visit["phase"]["key"].as_str().map(str::to_owned))
            .collect(),
        phase: body["phase"]["key"]
            .as_str()
            .ok_or_else(|| unexpected(what, "no current phase"))?
            .to_owned(),
        version: body["version"]
            .as_i64()
            .ok_or_else(|| unexpected(what, "no version"))?,
    })
}
