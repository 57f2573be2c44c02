//! The docs service through HTTP on port 0, against the MongoDB-compatible
//! test server and Kafka.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document as BsonDocument};
use rdkafka::Message;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::json;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tramita_docs::{Application, Settings};
use tramita_identity::IdentitySettings;
use tramita_messaging::{Envelope, KafkaSettings};
use tramita_testkit::{bearer_client, eventually, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

const PDF_HEADER: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
const MIB: usize = 1024 * 1024;

/// Deterministic bytes that do not compress or repeat: a PDF of `len` bytes.
fn pdf(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = PDF_HEADER.to_vec();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One part of a hand-made multipart body.
struct Part<'a> {
    name: &'a str,
    /// The whole `filename...` parameter(s), e.g. `filename="a.pdf"`.
    filename: Option<&'a str>,
    content_type: Option<&'a str>,
    data: &'a [u8],
}

fn file_part<'a>(filename: &'a str, content_type: &'a str, data: &'a [u8]) -> Part<'a> {
    Part {
        name: "file",
        filename: Some(filename),
        content_type: Some(content_type),
        data,
    }
}

const BOUNDARY: &str = "tramita-test-boundary-7MA4YWxkTrZu0gW";

fn multipart_body(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend(format!("Content-Disposition: form-data; name=\"{}\"", part.name).as_bytes());
        if let Some(filename) = part.filename {
            body.extend(b"; ");
            body.extend(filename.as_bytes());
        }
        body.extend(b"\r\n");
        if let Some(content_type) = part.content_type {
            body.extend(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend(b"\r\n");
        body.extend(part.data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn form_data() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// `body` as a stream of 64 KiB pieces, so it is sent chunked, with no
/// length announced: the service finds out the size only by reading.
fn streamed(body: Vec<u8>) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(pieces))
}

struct TestDocs {
    base: String,
    handle: ServiceHandle,
    db: mongodb::Database,
    issuer: TestIssuer,
    infra: TestInfra,
    kafka: KafkaSettings,
    /// Sends a clerk's token on every request.
    client: reqwest::Client,
}

impl TestDocs {
    async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let infra = TestInfra::from_env();
        let issuer = TestIssuer::start().await;
        let kafka = KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: infra.topic_prefix(),
        };
        let mut settings = Settings {
            host: "127.0.0.1".into(),
            port: 0,
            mongodb_uri: TestInfra::mongodb_uri(),
            database: infra.fresh_mongo_database_name(),
            max_bytes: 8 * MIB as u64,
            media_types: tramita_docs::startup::DEFAULT_MEDIA_TYPES
                .iter()
                .map(|raw| tramita_docs::domain::MediaType::parse(raw).unwrap())
                .collect(),
            upload_ttl: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(3600),
            kafka: kafka.clone(),
            topic_partitions: 1,
            files_events_partitions: 1,
            workers: 2,
            identity: IdentitySettings {
                jwks_url: issuer.jwks_url.clone(),
                issuer: issuer.issuer.clone(),
                audience: issuer.audience.clone(),
            },
            consumer_group: "docs".into(),
            max_attempts: 3,
            outbox_relay: true,
            retention: Default::default(),
            idempotency: Default::default(),
        };
        adjust(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("build the docs service");
        let base = format!("http://127.0.0.1:{}", app.port());
        let db = app.database().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            base,
            handle,
            db,
            infra,
            kafka,
            client: bearer_client(&issuer.token("clerk-1", &["clerk"])),
            issuer,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Publishes `envelope` on the logical `topic`, keyed by its aggregate.
    async fn publish(&self, topic: &str, envelope: &Envelope) {
        self.infra
            .produce_raw(
                &self.kafka.topic(topic),
                &envelope.aggregate_id,
                &envelope.payload_bytes(),
                Some(envelope.kafka_headers()),
            )
            .await;
    }

    /// Publishes on `files.events` a snapshot of `file` with `status` at
    /// `version`, as the files service does; returns its envelope.
    async fn announce_file(&self, file: Uuid, status: &str, version: i64) -> Envelope {
        let now = chrono::Utc::now();
        let envelope = Envelope::new(
            if version == 1 {
                "files.FileCreated.v1"
            } else {
                "files.FileUpdated.v1"
            },
            file.to_string(),
            json!({
                "file_id": file, "code": format!("EXP-{version}"), "initial_option": "Sede electrónica",
                "description": "Licencia", "status": status, "created_at": now, "created_by": null,
                "updated_at": now, "updated_by": null, "version": version,
            }),
        );
        self.publish("files.events", &envelope).await;
        envelope
    }

    /// Makes docs know `file` with `status` at `version` through
    /// `files.events`, and waits until it does.
    async fn file_is(&self, file: Uuid, status: &str, version: i64) {
        self.announce_file(file, status, version).await;
        let files = self.db.collection::<BsonDocument>("files");
        eventually(
            Duration::from_secs(30),
            "docs learns the file's status",
            || {
                let files = files.clone();
                async move {
                    files
                        .find_one(
                            doc! {"_id": file.to_string(), "version": version, "status": status},
                        )
                        .await
                        .unwrap()
                        .map(|_| ())
                }
            },
        )
        .await;
    }

    /// Waits until the consumer `consumer` recorded `envelope` in its inbox.
    async fn consumed(&self, consumer: &str, envelope: &Envelope) {
        let inbox = self.db.collection::<BsonDocument>("messaging_inbox");
        let id = envelope.message_id.to_string();
        eventually(Duration::from_secs(30), "the message is consumed", || {
            let (inbox, id) = (inbox.clone(), id.clone());
            async move {
                inbox
                    .find_one(doc! {"consumer": consumer, "message_id": id})
                    .await
                    .unwrap()
                    .map(|_| ())
            }
        })
        .await;
    }

    /// A file docs knows as active.
    async fn active_file(&self) -> Uuid {
        let file = Uuid::now_v7();
        self.file_is(file, "active", 1).await;
        file
    }

    async fn post_multipart(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: reqwest::Body,
    ) -> reqwest::Response {
        client
            .post(self.url(path))
            .header("content-type", form_data())
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Adds `data` called `name` to `file` as the clerk, streamed.
    async fn add(
        &self,
        file: Uuid,
        name: &str,
        content_type: &str,
        data: &[u8],
    ) -> reqwest::Response {
        let filename = format!("filename=\"{name}\"");
        let body = multipart_body(&[file_part(&filename, content_type, data)]);
        self.post_multipart(
            &self.client,
            &format!("/docs/files/{file}/documents"),
            streamed(body),
        )
        .await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    async fn count(&self, collection: &str) -> u64 {
        self.db
            .collection::<BsonDocument>(collection)
            .count_documents(doc! {})
            .await
            .unwrap()
    }

    /// How many outbox messages of `message_type` there are (published or
    /// not).
    async fn outbox(&self, message_type: &str) -> usize {
        let stored: Vec<BsonDocument> = self
            .db
            .collection::<BsonDocument>("messaging_outbox")
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        stored
            .iter()
            .map(|d| serde_json::from_str::<Envelope>(d.get_str("envelope").unwrap()).unwrap())
            .filter(|e| e.message_type == message_type)
            .count()
    }

    /// Asserts nothing at all is stored: no upload, document, content or
    /// outbox message.
    async fn assert_nothing_stored(&self) {
        for collection in [
            "uploads",
            "documents",
            "content.files",
            "content.chunks",
            "content_trash",
            "messaging_outbox",
        ] {
            assert_eq!(self.count(collection).await, 0, "{collection} is empty");
        }
    }
}

async fn json(response: reqwest::Response, status: StatusCode) -> Value {
    let got = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(got, status, "unexpected status; body: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn assert_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("application/problem+json".to_owned()),
        "a problem for {status}"
    );
    let body = json(response, status).await;
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["title"].is_string() && body["type"].is_string(),
        "{body}"
    );
    body
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_upload_streams_in_and_downloads_back_byte_for_byte() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let content = pdf(3 * MIB + 12_345, 1);
    let created = json(
        docs.add(file, "Resolución nº 7.pdf", "application/pdf", &content)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["name"], "Resolución nº 7.pdf");
    assert_eq!(created["media_type"], "application/pdf");
    assert_eq!(created["size"], content.len());
    assert_eq!(created["sha256"], sha256(&content));
    assert_eq!(created["version_count"], 1);
    assert_eq!(created["created_by"]["id"], "clerk-1");
    let id = created["id"].as_str().unwrap();

    let chunks = docs.count("content.chunks").await;
    assert_eq!(
        chunks,
        content.len().div_ceil(255 * 1024) as u64,
        "stored in GridFS chunks"
    );

    let download = docs.get(&format!("/docs/documents/{id}/content")).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(header(&download, "content-type"), "application/pdf");
    assert_eq!(
        header(&download, "content-length"),
        content.len().to_string()
    );
    assert_eq!(
        header(&download, "etag"),
        format!("\"{}\"", sha256(&content))
    );
    assert_eq!(header(&download, "accept-ranges"), "bytes");
    assert_eq!(header(&download, "x-content-type-options"), "nosniff");
    let disposition = header(&download, "content-disposition");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''Resoluci%C3%B3n%20n%C2%BA%207.pdf"),
        "{disposition}"
    );
    assert!(
        disposition.contains("filename=\"Resoluci_n n_ 7.pdf\""),
        "{disposition}"
    );
    let mut received = Vec::new();
    let mut body = download.bytes_stream();
    while let Some(piece) = body.next().await {
        received.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(received.len(), content.len());
    assert_eq!(sha256(&received), sha256(&content), "byte for byte");
    assert!(received == content);

    let fetched = json(
        docs.get(&format!("/docs/documents/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fetched, created);
    let listed = json(
        docs.get(&format!("/docs/files/{file}/documents")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["latest"]["sha256"], sha256(&content));
    assert!(listed["next_cursor"].is_null());
    assert_eq!(
        docs.outbox("docs.DocumentAdded.v1").await,
        1,
        "announced in the same transaction"
    );

    // A staged upload: received the same way, no document yet.
    let text = "Acta de la sesión — ñandú\n".repeat(1000);
    let staged = json(
        docs.post_multipart(
            &docs.client,
            "/docs/uploads",
            multipart_body(&[file_part(
                "filename=\"acta.txt\"",
                "text/plain; charset=utf-8",
                text.as_bytes(),
            )])
            .into(),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(staged["media_type"], "text/plain");
    assert_eq!(staged["size"], text.len());
    assert_eq!(staged["sha256"], sha256(text.as_bytes()));
    assert!(staged["expires_at"].as_str().unwrap() > staged["created_at"].as_str().unwrap());
    docs.handle.stop().await;
}

#[tokio::test]
async fn a_second_upload_with_the_same_name_is_version_2() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let (first, second) = (pdf(300_000, 2), pdf(200_000, 3));
    let one = json(
        docs.add(file, "informe.pdf", "application/pdf", &first)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let two = json(
        docs.add(file, "informe.pdf", "application/pdf", &second)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(two["id"], one["id"], "the same document");
    assert_eq!(two["version_count"], 2);
    let numbers: Vec<u64> = two["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(two["sha256"], sha256(&second));
    let other = json(
        docs.add(file, "anexo.pdf", "application/pdf", &first).await,
        StatusCode::CREATED,
    )
    .await;
    assert_ne!(other["id"], one["id"], "another name, another document");

    let id = one["id"].as_str().unwrap();
    let latest = docs
        .get(&format!("/docs/documents/{id}/content"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(latest == second, "the latest is version 2");
    let v1 = docs
        .get(&format!("/docs/documents/{id}/versions/1/content"))
        .await;
    assert_eq!(header(&v1, "etag"), format!("\"{}\"", sha256(&first)));
    assert!(v1.bytes().await.unwrap() == first, "version 1 is kept");
    assert_problem(
        docs.get(&format!("/docs/documents/{id}/versions/3/content"))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        docs.get(&format!("/docs/documents/{id}/versions/0/content"))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let listed = json(
        docs.get(&format!("/docs/files/{file}/documents")).await,
        StatusCode::OK,
    )
    .await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["version_count"], 2);
    assert_eq!(items[0]["latest"]["number"], 2);
    let page = json(
        docs.get(&format!("/docs/files/{file}/documents?limit=1"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["items"][0]["id"], one["id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = json(
        docs.get(&format!(
            "/docs/files/{file}/documents?limit=1&cursor={cursor}"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(next["items"][0]["id"], other["id"]);

    assert_eq!(docs.outbox("docs.DocumentAdded.v1").await, 2);
    assert_eq!(docs.outbox("docs.DocumentVersionAdded.v1").await, 1);
    docs.handle.stop().await;
}

#[tokio::test]
async fn two_uploads_of_the_same_name_at_once_become_versions_1_and_2() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let (a, b) = (pdf(100_000, 4), pdf(100_000, 5));
    let (ra, rb) = tokio::join!(
        docs.add(file, "simultáneo.pdf", "application/pdf", &a),
        docs.add(file, "simultáneo.pdf", "application/pdf", &b)
    );
    let (ra, rb) = (
        json(ra, StatusCode::CREATED).await,
        json(rb, StatusCode::CREATED).await,
    );
    assert_eq!(ra["id"], rb["id"], "one document");
    let listed = json(
        docs.get(&format!("/docs/files/{file}/documents")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let document = json(
        docs.get(&format!("/docs/documents/{}", ra["id"].as_str().unwrap()))
            .await,
        StatusCode::OK,
    )
    .await;
    let mut shas: Vec<&str> = document["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["sha256"].as_str().unwrap())
        .collect();
    shas.sort();
    let mut expected = vec![sha256(&a), sha256(&b)];
    expected.sort();
    assert_eq!(shas, expected, "both kept, as versions 1 and 2");
    assert_eq!(document["version_count"], 2);
    docs.handle.stop().await;
}

#[tokio::test]
async fn ranges_and_validators_are_answered() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let content = pdf(600_000, 6);
    let size = content.len();
    let created = json(
        docs.add(file, "planos.pdf", "application/pdf", &content)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let url = docs.url(&format!(
        "/docs/documents/{}/content",
        created["id"].as_str().unwrap()
    ));
    let etag = format!("\"{}\"", sha256(&content));
    let with = |headers: &[(&str, &str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        docs.client.get(&url).headers(map).send()
    };

    // Ranges inside one chunk, across chunks (GridFS chunks are 255 KiB), and at the end.
    for (range, start, end) in [
        ("bytes=10-19", 10, 20),
        ("bytes=261000-262200", 261_000, 262_201),
        ("bytes=-5", size - 5, size),
        (&format!("bytes={}-", size - 100) as &str, size - 100, size),
    ] {
        let response = with(&[("range", range)]).await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&response, "content-range"),
            format!("bytes {start}-{}/{size}", end - 1)
        );
        assert_eq!(
            header(&response, "content-length"),
            (end - start).to_string()
        );
        assert_eq!(header(&response, "etag"), etag);
        assert!(
            response.bytes().await.unwrap() == content[start..end],
            "{range}"
        );
    }
    let unsatisfiable = with(&[("range", &format!("bytes={size}-"))]).await.unwrap();
    assert_eq!(
        header(&unsatisfiable, "content-range"),
        format!("bytes */{size}")
    );
    assert_problem(unsatisfiable, StatusCode::RANGE_NOT_SATISFIABLE).await;
    for ignored in ["bytes=0-1,5-6", "bytes=9-1", "lines=1-2"] {
        let whole = with(&[("range", ignored)]).await.unwrap();
        assert_eq!(whole.status(), StatusCode::OK, "{ignored} is served whole");
        assert_eq!(whole.bytes().await.unwrap().len(), size);
    }
    let stale_if_range = with(&[("range", "bytes=0-9"), ("if-range", "\"0000\"")])
        .await
        .unwrap();
    assert_eq!(
        stale_if_range.status(),
        StatusCode::OK,
        "a stale If-Range gets the whole content"
    );
    let fresh_if_range = with(&[("range", "bytes=0-9"), ("if-range", &etag)])
        .await
        .unwrap();
    assert_eq!(fresh_if_range.status(), StatusCode::PARTIAL_CONTENT);

    for matching in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"abc\", {etag}"),
        "*".to_owned(),
    ] {
        let response = with(&[("if-none-match", &matching)]).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{matching}");
        assert_eq!(header(&response, "etag"), etag);
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let changed = with(&[("if-none-match", "\"something-else\"")])
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    docs.handle.stop().await;
}

#[tokio::test]
async fn an_oversized_upload_is_refused_and_leaves_no_chunk_behind() {
    let docs = TestDocs::spawn_with(|s| s.max_bytes = MIB as u64).await;
    let file = docs.active_file().await;
    // Streamed with no length: refused only after a megabyte was read and
    // several chunks were written.
    let big = pdf(3 * MIB, 7);
    let refused = docs.add(file, "enorme.pdf", "application/pdf", &big).await;
    let problem = assert_problem(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&MIB.to_string()),
        "{problem}"
    );
    docs.assert_nothing_stored().await;

    // Announced too long: refused before reading.
    let body = multipart_body(&[file_part(
        "filename=\"enorme.pdf\"",
        "application/pdf",
        &big,
    )]);
    let refused = docs
        .post_multipart(&docs.client, "/docs/uploads", body.into())
        .await;
    assert_problem(refused, StatusCode::PAYLOAD_TOO_LARGE).await;
    docs.assert_nothing_stored().await;

    // Exactly the limit is accepted.
    let fits = pdf(MIB, 8);
    json(
        docs.add(file, "justo.pdf", "application/pdf", &fits).await,
        StatusCode::CREATED,
    )
    .await;
    docs.handle.stop().await;
}

#[tokio::test]
async fn a_content_that_is_not_what_it_claims_is_refused() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let mut binary_text = "texto ".repeat(20_000).into_bytes();
    binary_text.extend(b"\0\x01\x02");
    let mut latin1 = "texto ".repeat(20_000).into_bytes();
    latin1.extend(b"caf\xe9");
    let zip =
        b"PK\x03\x04\x14\0\0\0\0\0\0\0\0\0\0\0\0\0\x05\0\0\0\x05\0\0\0\x09\0\0\0notes.txthello"
            .to_vec();
    let cases: [(&str, &str, &[u8]); 8] = [
        ("a.pdf", "application/pdf", PNG),
        ("a.png", "image/png", b"just some text"),
        ("a.txt", "text/plain", &binary_text),
        ("a.txt", "text/plain", &latin1),
        (
            "a.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            &zip,
        ),
        ("a.zip", "application/zip", &zip),
        ("a.bin", "application/octet-stream", b"no signature at all"),
        (
            "a.exe",
            "application/octet-stream",
            b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0",
        ),
    ];
    for (name, declared, data) in cases {
        let refused = docs.add(file, name, declared, data).await;
        let problem = assert_problem(refused, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert!(
            problem["detail"].is_string(),
            "{name} as {declared}: {problem}"
        );
    }
    docs.assert_nothing_stored().await;

    // Declared or not, a real PNG is a PNG; plain text passes when declared so.
    let png = json(
        docs.add(file, "sello.png", "application/octet-stream", PNG)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(png["media_type"], "image/png");
    let text = json(
        docs.add(file, "nota.txt", "text/plain", "Hola, ñandú".as_bytes())
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(text["media_type"], "text/plain");
    let served = docs
        .get(&format!(
            "/docs/documents/{}/content",
            text["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(header(&served, "content-type"), "text/plain; charset=utf-8");
    docs.handle.stop().await;
}

#[tokio::test]
async fn a_finished_files_documents_refuse_changes_but_can_be_read() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let content = pdf(50_000, 9);
    let created = json(
        docs.add(file, "resolución.pdf", "application/pdf", &content)
            .await,
        StatusCode::CREATED,
    )
    .await;
    docs.file_is(file, "finished", 2).await;
    // A stale snapshot arriving late does not reopen it.
    let stale = docs.announce_file(file, "active", 1).await;
    docs.consumed("docs.files-events", &stale).await;

    for name in ["resolución.pdf", "otro.pdf"] {
        let refused = docs.add(file, name, "application/pdf", &content).await;
        let problem = assert_problem(refused, StatusCode::CONFLICT).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("finished"),
            "{problem}"
        );
    }
    let id = created["id"].as_str().unwrap();
    let document = json(
        docs.get(&format!("/docs/documents/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(document["version_count"], 1, "no version was added");
    assert_eq!(
        docs.get(&format!("/docs/documents/{id}/content"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        docs.count("uploads").await,
        1,
        "only the attached upload is recorded"
    );
    assert_eq!(
        docs.count("content.files").await,
        1,
        "the refused contents are gone"
    );
    assert_eq!(docs.outbox("docs.DocumentAdded.v1").await, 1);
    assert_eq!(docs.outbox("docs.DocumentVersionAdded.v1").await, 0);
    docs.handle.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_stores_nothing() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let path = format!("/docs/files/{file}/documents");
    let content = pdf(10_000, 10);
    let send = |body: Vec<u8>| docs.post_multipart(&docs.client, &path, body.into());

    // Framing.
    let mut unterminated =
        multipart_body(&[file_part("filename=\"a.pdf\"", "application/pdf", &content)]);
    unterminated.truncate(unterminated.len() - 20);
    for (what, body) in [
        ("garbage", b"this is not multipart at all".to_vec()),
        ("unterminated", unterminated),
        ("empty", Vec::new()),
    ] {
        let response = send(body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    // Parts.
    let text_field = Part {
        name: "description",
        filename: None,
        content_type: None,
        data: b"hola",
    };
    let no_name = Part {
        name: "file",
        filename: None,
        content_type: Some("application/pdf"),
        data: &content,
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no file part", multipart_body(&[text_field])),
        (
            "a field besides the file",
            multipart_body(&[
                file_part("filename=\"a.pdf\"", "application/pdf", &content),
                Part {
                    name: "description",
                    filename: None,
                    content_type: None,
                    data: b"x",
                },
            ]),
        ),
        (
            "two files",
            multipart_body(&[
                file_part("filename=\"a.pdf\"", "application/pdf", &content),
                file_part("filename=\"b.pdf\"", "application/pdf", &content),
            ]),
        ),
        ("no file name", multipart_body(&[no_name])),
        (
            "NUL in the name",
            multipart_body(&[file_part(
                "filename*=UTF-8''a%00b.pdf",
                "application/pdf",
                &content,
            )]),
        ),
        (
            "a control character in the name",
            multipart_body(&[file_part(
                "filename*=UTF-8''a%01b.pdf",
                "application/pdf",
                &content,
            )]),
        ),
        (
            "a line break in the name",
            multipart_body(&[file_part(
                "filename*=UTF-8''a%0Ab.pdf",
                "application/pdf",
                &content,
            )]),
        ),
        (
            "a name that is only a path",
            multipart_body(&[file_part(
                "filename=\"carpeta/\"",
                "application/pdf",
                &content,
            )]),
        ),
        (
            "a name that is not UTF-8",
            multipart_body(&[file_part(
                "filename*=UTF-8''caf%E9.pdf",
                "application/pdf",
                &content,
            )]),
        ),
        (
            "a name too long",
            multipart_body(&[file_part(
                &format!("filename=\"{}.pdf\"", "x".repeat(300)),
                "application/pdf",
                &content,
            )]),
        ),
    ];
    for (what, body) in cases {
        let problem = assert_problem(send(body).await, StatusCode::BAD_REQUEST).await;
        assert!(problem["detail"].is_string(), "{what}: {problem}");
    }
    // Not multipart.
    let json_body = docs
        .client
        .post(docs.url(&path))
        .json(&serde_json::json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(json_body, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let no_type = docs
        .client
        .post(docs.url("/docs/uploads"))
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_problem(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // Unknown ids.
    let unknown = Uuid::now_v7();
    let to_unknown = docs
        .add(unknown, "a.pdf", "application/pdf", &content)
        .await;
    assert_problem(to_unknown, StatusCode::NOT_FOUND).await;
    for path in [
        format!("/docs/files/{unknown}/documents"),
        format!("/docs/documents/{unknown}"),
        format!("/docs/documents/{unknown}/content"),
        format!("/docs/documents/{unknown}/versions/1/content"),
        "/docs/documents/not-a-uuid".to_owned(),
        "/docs/documents/not-a-uuid/versions/x/content".to_owned(),
    ] {
        assert_problem(docs.get(&path).await, StatusCode::NOT_FOUND).await;
    }
    // Known paths, other methods.
    let wrong_method = docs
        .client
        .get(docs.url("/docs/uploads"))
        .send()
        .await
        .unwrap();
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    let wrong_method = docs
        .client
        .delete(docs.url(&format!("/docs/documents/{unknown}")))
        .send()
        .await
        .unwrap();
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    // Paging.
    for query in [
        "limit=0",
        "limit=201",
        "limit=x",
        "cursor=nope",
        "colour=red",
    ] {
        let response = docs
            .get(&format!("/docs/files/{file}/documents?{query}"))
            .await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    docs.assert_nothing_stored().await;
    docs.handle.stop().await;
}

#[tokio::test]
async fn each_role_may_call_only_what_it_is_allowed_to() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let content = pdf(20_000, 11);
    let created = json(
        docs.add(file, "base.pdf", "application/pdf", &content)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let document = created["id"].as_str().unwrap().to_owned();
    // (role, may read, may upload)
    let table = [
        ("reader", true, false),
        ("admin", true, false),
        ("clerk", true, true),
        ("validator", true, true),
    ];
    for (role, may_read, may_upload) in table {
        let client = bearer_client(&docs.issuer.token(&format!("{role}-user"), &[role]));
        for path in [
            format!("/docs/files/{file}/documents"),
            format!("/docs/documents/{document}"),
            format!("/docs/documents/{document}/content"),
        ] {
            let status = client.get(docs.url(&path)).send().await.unwrap().status();
            assert_eq!(
                status == StatusCode::OK,
                may_read,
                "{role} GET {path}: {status}"
            );
        }
        let body = multipart_body(&[file_part(
            &format!("filename=\"{role}.pdf\""),
            "application/pdf",
            &content,
        )]);
        let added = docs
            .post_multipart(
                &client,
                &format!("/docs/files/{file}/documents"),
                body.clone().into(),
            )
            .await;
        let staged = docs
            .post_multipart(&client, "/docs/uploads", body.into())
            .await;
        if may_upload {
            assert_eq!(added.status(), StatusCode::CREATED, "{role} adds");
            assert_eq!(staged.status(), StatusCode::CREATED, "{role} stages");
        } else {
            assert_problem(added, StatusCode::FORBIDDEN).await;
            assert_problem(staged, StatusCode::FORBIDDEN).await;
        }
    }
    let anonymous = reqwest::Client::new();
    let body = multipart_body(&[file_part("filename=\"x.pdf\"", "application/pdf", &content)]);
    let response = anonymous
        .post(docs.url("/docs/uploads"))
        .header("content-type", form_data())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "www-authenticate"), "Bearer");
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
    let response = anonymous
        .get(docs.url(&format!("/docs/documents/{document}/content")))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
    for (name, token) in docs.issuer.bad_tokens() {
        let response = anonymous
            .get(docs.url(&format!("/docs/documents/{document}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
    let no_roles = bearer_client(&docs.issuer.token("nobody", &[]));
    assert_eq!(
        no_roles
            .get(docs.url(&format!("/docs/documents/{document}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    // The base document, one per writing role, and the writers' staged uploads.
    assert_eq!(docs.count("documents").await, 3);
    assert_eq!(docs.count("uploads").await, 5);
    docs.handle.stop().await;
}

#[tokio::test]
async fn expired_and_interrupted_uploads_are_swept_and_an_attached_one_is_kept() {
    let docs = TestDocs::spawn_with(|s| {
        s.upload_ttl = Duration::from_secs(1);
        s.sweep_interval = Duration::from_secs(1);
    })
    .await;
    let file = docs.active_file().await;
    let kept = pdf(300_000, 12);
    let document = json(
        docs.add(file, "guardado.pdf", "application/pdf", &kept)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let staged = json(
        docs.post_multipart(
            &docs.client,
            "/docs/uploads",
            multipart_body(&[file_part(
                "filename=\"olvidado.pdf\"",
                "application/pdf",
                &pdf(600_000, 13),
            )])
            .into(),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let staged_id = staged["id"].as_str().unwrap().to_owned();
    // An upload cut off by a crash: its record still says receiving, and
    // some chunks were written, with no files document.
    let crashed = Uuid::now_v7().to_string();
    let past = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() - 1000,
    );
    docs.db
        .collection::<BsonDocument>("uploads")
        .insert_one(doc! {
            "_id": &crashed, "state": "receiving", "name": "cortado.pdf",
            "created_by": {"id": "clerk-1", "name": "Demo"}, "started_at": past, "expires_at": past,
        })
        .await
        .unwrap();
    docs.db
        .collection::<BsonDocument>("content.chunks")
        .insert_one(doc! {
            "files_id": &crashed, "n": 0,
            "data": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![1; 1024] },
        })
        .await
        .unwrap();
    let chunks_of = |id: String| {
        let chunks = docs.db.collection::<BsonDocument>("content.chunks");
        async move { chunks.count_documents(doc! {"files_id": id}).await.unwrap() }
    };
    assert!(chunks_of(staged_id.clone()).await > 0);

    eventually(
        Duration::from_secs(30),
        "the expired upload's content is deleted",
        || async {
            let upload = docs
                .db
                .collection::<BsonDocument>("uploads")
                .find_one(doc! {"_id": &staged_id})
                .await
                .unwrap();
            let swept = upload.is_none_or(|u| {
                u.get_str("state") == Ok("expired") && u.get_bool("content_deleted") == Ok(true)
            });
            let interrupted_gone = chunks_of(crashed.clone()).await == 0;
            (swept && interrupted_gone && chunks_of(staged_id.clone()).await == 0).then_some(())
        },
    )
    .await;
    let files = docs.db.collection::<BsonDocument>("content.files");
    assert!(files
        .find_one(doc! {"_id": &staged_id})
        .await
        .unwrap()
        .is_none());
    eventually(
        Duration::from_secs(30),
        "expired and claimed uploads are forgotten after their grace time",
        || async { (docs.count("uploads").await == 0).then_some(()) },
    )
    .await;

    let id = document["id"].as_str().unwrap();
    let download = docs.get(&format!("/docs/documents/{id}/content")).await;
    assert_eq!(download.status(), StatusCode::OK);
    assert!(
        download.bytes().await.unwrap() == kept,
        "an attached upload's content stays"
    );
    docs.handle.stop().await;
}

#[tokio::test]
async fn health_metrics_and_the_api_description_are_served() {
    let docs = TestDocs::spawn().await;
    let ready = json(docs.get("/health/ready").await, StatusCode::OK).await;
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mongodb", "kafka", "files-events", "commands"]);
    assert_eq!(docs.get("/health/live").await.status(), StatusCode::OK);
    let openapi = json(docs.get("/openapi.json").await, StatusCode::OK).await;
    assert!(openapi["paths"]["/docs/uploads"]["post"].is_object());
    let swagger = docs.get("/docs/").await;
    assert_eq!(
        swagger.status(),
        StatusCode::OK,
        "the Swagger UI shares /docs/ with the API"
    );
    let page = swagger.text().await.unwrap();
    assert!(
        !page.contains("cdn") && !page.contains("unpkg"),
        "Swagger UI is vendored"
    );
    docs.get(&format!("/docs/files/{}/documents", Uuid::now_v7()))
        .await;
    let metrics = docs.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("tramita_docs_http_requests_total"),
        "request metrics exported"
    );
    // Document events are history, not snapshots: docs.events keeps them
    // all (compaction would keep each file's last document event only).
    let config: std::collections::HashMap<String, String> = docs
        .kafka
        .topic_config(&docs.kafka.topic("docs.events"))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(config["cleanup.policy"], "delete");
    assert_eq!(config["retention.ms"], "-1");
    docs.handle.stop().await;
}

#[test]
fn the_openapi_document_is_under_review() {
    use utoipa::OpenApi;
    let document = tramita_docs::adapters::http::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    tramita_testkit::assert_snapshot(&path, &document);
}

/// Reads `topic` until `expected` messages arrived, then checks for a few
/// seconds that no more come.
async fn exactly(
    docs: &TestDocs,
    topic: &str,
    expected: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let topic = docs.kafka.topic(topic);
    let arrived = docs
        .infra
        .read_topic(&topic, expected, Duration::from_secs(60))
        .await;
    assert_eq!(
        arrived.len(),
        expected,
        "{topic}: {expected} messages arrive"
    );
    let settled = docs
        .infra
        .read_topic(&topic, expected + 1, Duration::from_secs(4))
        .await;
    assert_eq!(settled.len(), expected, "{topic}: and no more");
    settled
}

fn payload(message: &rdkafka::message::OwnedMessage) -> Value {
    serde_json::from_slice(message.payload().unwrap()).unwrap()
}

fn message_header(message: &rdkafka::message::OwnedMessage, name: &str) -> String {
    tramita_testkit::header(message, name).unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn attach_upload_and_remove_document_delivered_twice_have_one_effect_and_one_reply() {
    let docs = TestDocs::spawn_with(|s| s.sweep_interval = Duration::from_secs(1)).await;
    let replies = "files.saga-replies";
    docs.kafka
        .ensure_topics(&[docs.kafka.topic(replies)], 1)
        .await
        .unwrap();
    let file = Uuid::now_v7();
    docs.file_is(file, "pending", 1).await;
    let content = pdf(400_000, 20);
    let upload = json(
        docs.post_multipart(
            &docs.client,
            "/docs/uploads",
            multipart_body(&[file_part(
                "filename=\"solicitud.pdf\"",
                "application/pdf",
                &content,
            )])
            .into(),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let upload_id = upload["id"].as_str().unwrap();
    let other_upload = json(
        docs.post_multipart(
            &docs.client,
            "/docs/uploads",
            multipart_body(&[file_part(
                "filename=\"anexo.pdf\"",
                "application/pdf",
                &pdf(1_000, 21),
            )])
            .into(),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let saga = Uuid::now_v7();
    let command_of = |actor: &str, message_type: &str, fields: Value| {
        let mut payload = json!({
            "saga_id": saga, "step": "attach_document", "reply_to": docs.kafka.topic(replies),
            "file_id": file,
        });
        payload
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        Envelope::new(message_type, file.to_string(), payload).with_actor(Some(actor.into()))
    };
    // The uploads are clerk-1's (the client's token).
    let command = |message_type: &str, fields: Value| command_of("clerk-1", message_type, fields);

    // The same command twice, then another one for the same upload, then
    // one for an upload that does not exist, then one on behalf of another
    // user for an upload that is clerk-1's.
    let attach = command("docs.AttachUpload.v1", json!({"upload_id": upload_id}));
    docs.publish("docs.commands", &attach).await;
    docs.publish("docs.commands", &attach).await;
    let again = command("docs.AttachUpload.v1", json!({"upload_id": upload_id}));
    docs.publish("docs.commands", &again).await;
    let unknown = command("docs.AttachUpload.v1", json!({"upload_id": Uuid::now_v7()}));
    docs.publish("docs.commands", &unknown).await;
    let stolen = command_of(
        "clerk-7",
        "docs.AttachUpload.v1",
        json!({"upload_id": other_upload["id"]}),
    );
    docs.publish("docs.commands", &stolen).await;
    let answered = exactly(&docs, replies, 4).await;
    let types: Vec<String> = answered
        .iter()
        .map(|m| message_header(m, "message-type"))
        .collect();
    assert_eq!(
        types,
        [
            "docs.DocumentAttached.v1",
            "docs.AttachRefused.v1",
            "docs.AttachRefused.v1",
            "docs.AttachRefused.v1"
        ]
    );
    let attached = payload(&answered[0]);
    assert_eq!(attached["saga_id"], saga.to_string());
    assert_eq!(attached["step"], "attach_document");
    assert_eq!(attached["file_id"], file.to_string());
    assert_eq!(attached["version"], 1);
    assert_eq!(attached["name"], "solicitud.pdf");
    assert_eq!(attached["media_type"], "application/pdf");
    assert_eq!(attached["size"], content.len());
    assert_eq!(attached["sha256"], sha256(&content));
    assert_eq!(
        message_header(&answered[0], "causation-id"),
        attach.message_id.to_string()
    );
    assert_eq!(
        message_header(&answered[0], "correlation-id"),
        attach.correlation_id.to_string()
    );
    assert_eq!(
        message_header(&answered[0], "aggregate-id"),
        file.to_string()
    );
    assert_eq!(message_header(&answered[0], "actor"), "clerk-1");
    assert_eq!(payload(&answered[1])["reason"], "upload_claimed");
    assert_eq!(payload(&answered[1])["saga_id"], saga.to_string());
    assert_eq!(payload(&answered[2])["reason"], "unknown_upload");
    assert!(payload(&answered[2])["detail"].is_string());
    assert_eq!(
        payload(&answered[3])["reason"],
        "unknown_upload",
        "another user's upload is not theirs to attach"
    );

    let document_id = attached["document_id"].as_str().unwrap().to_owned();
    let listed = json(
        docs.get(&format!("/docs/files/{file}/documents")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "one document");
    assert_eq!(listed["items"][0]["version_count"], 1, "one version");
    assert_eq!(
        listed["items"][0]["created_by"]["id"], "clerk-1",
        "uploaded by whoever sent the content"
    );
    let body = docs
        .get(&format!("/docs/documents/{document_id}/content"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(body == content);

    // The compensation, twice, and once more as a new command once gone.
    let remove = command(
        "docs.RemoveDocument.v1",
        json!({"document_id": document_id, "step": "remove_document"}),
    );
    docs.publish("docs.commands", &remove).await;
    docs.publish("docs.commands", &remove).await;
    let gone = command(
        "docs.RemoveDocument.v1",
        json!({"document_id": document_id, "step": "remove_document"}),
    );
    docs.publish("docs.commands", &gone).await;
    let answered = exactly(&docs, replies, 6).await;
    for (reply, cause) in answered[4..].iter().zip([&remove, &gone]) {
        assert_eq!(
            message_header(reply, "message-type"),
            "docs.DocumentRemoved.v1"
        );
        assert_eq!(
            message_header(reply, "causation-id"),
            cause.message_id.to_string()
        );
        let removed = payload(reply);
        assert_eq!(removed["saga_id"], saga.to_string());
        assert_eq!(removed["step"], "remove_document");
        assert_eq!(removed["document_id"], document_id.as_str());
    }
    assert_problem(
        docs.get(&format!("/docs/documents/{document_id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the removed document's content is deleted",
        || async {
            // Left: the one chunk of the upload another user could not take.
            (docs.count("content.chunks").await == 1 && docs.count("content_trash").await == 0)
                .then_some(())
        },
    )
    .await;

    let events = exactly(&docs, "docs.events", 2).await;
    let types: Vec<String> = events
        .iter()
        .map(|m| message_header(m, "message-type"))
        .collect();
    assert_eq!(
        types,
        ["docs.DocumentAdded.v1", "docs.DocumentRemoved.v1"],
        "one effect each, in order"
    );
    assert_eq!(
        message_header(&events[0], "correlation-id"),
        attach.correlation_id.to_string()
    );
    docs.handle.stop().await;
}

#[tokio::test]
async fn commands_that_cannot_be_answered_go_to_the_dead_letters_and_change_nothing() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let malformed = [
        json!({"file_id": file, "upload_id": Uuid::now_v7()}),
        json!({"saga_id": Uuid::now_v7(), "step": "x", "reply_to": "bad topic name", "file_id": file, "upload_id": Uuid::now_v7()}),
        json!({"saga_id": Uuid::now_v7(), "step": "x\u{0}", "reply_to": "replies", "file_id": file, "upload_id": Uuid::now_v7()}),
        json!({"saga_id": Uuid::now_v7(), "step": "x", "reply_to": "replies", "file_id": Uuid::now_v7(), "upload_id": Uuid::now_v7()}),
        json!({"saga_id": Uuid::now_v7(), "step": "x", "reply_to": "replies", "file_id": file, "upload_id": "not-a-uuid"}),
    ];
    for payload in &malformed {
        let envelope = Envelope::new("docs.AttachUpload.v1", file.to_string(), payload.clone());
        docs.publish("docs.commands", &envelope).await;
    }
    let dead = docs
        .infra
        .read_topic(
            &docs.kafka.topic("docs.commands.dlq"),
            malformed.len(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        dead.len(),
        malformed.len(),
        "every malformed command is dead-lettered"
    );
    docs.assert_nothing_stored().await;
    docs.handle.stop().await;
}

#[tokio::test]
async fn an_upload_retried_with_its_idempotency_key_is_stored_once() {
    let docs = TestDocs::spawn().await;
    let file = docs.active_file().await;
    let content = pdf(1_500_000, 30);
    let send = |key: &str, data: &[u8]| {
        let body = multipart_body(&[file_part("filename=\"acta.pdf\"", "application/pdf", data)]);
        docs.client
            .post(docs.url(&format!("/docs/files/{file}/documents")))
            .header("content-type", form_data())
            .header("idempotency-key", key)
            .body(streamed(body))
            .send()
    };
    let first = send("upload-1", &content).await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json(first, StatusCode::CREATED).await;
    let retried = send("upload-1", &content).await.unwrap();
    assert_eq!(header(&retried, "idempotent-replayed"), "true");
    let retried = json(retried, StatusCode::CREATED).await;
    assert_eq!(retried, first, "the first answer, replayed");
    let document = json(
        docs.get(&format!(
            "/docs/documents/{}",
            first["id"].as_str().unwrap()
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(document["version_count"], 1, "no second version");
    assert_eq!(
        docs.count("content.files").await,
        1,
        "the content is stored once"
    );

    let other = send("upload-1", &pdf(1_500_000, 31)).await.unwrap();
    assert_problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    let second = json(
        send("upload-2", &content).await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(second["version_count"], 2, "a new key is a new upload");
    docs.handle.stop().await;
}

// ---------------------------------------------------------------------------
// Found by scripts/contract (schemathesis against the OpenAPI document)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_undeclared_method_on_a_known_path_is_405_naming_the_allowed_ones() {
    let docs = TestDocs::spawn().await;
    let id = Uuid::now_v7();
    for (method, path, allow) in [
        ("TRACE", "/docs/uploads".to_owned(), "POST"),
        ("GET", "/docs/uploads".to_owned(), "POST"),
        ("DELETE", format!("/docs/files/{id}/documents"), "GET, POST"),
        ("POST", format!("/docs/documents/{id}"), "GET"),
        (
            "PUT",
            format!("/docs/documents/{id}/versions/1/content"),
            "GET",
        ),
    ] {
        // It had no Allow header.
        let response =
            tramita_testkit::send_expecting_allow(&docs.client, method, &docs.url(&path), allow)
                .await;
        assert_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
    docs.handle.stop().await;
}

#[test]
fn the_openapi_document_states_bounds_and_every_answer() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(tramita_docs::adapters::http::ApiDoc::openapi()).unwrap();
    let list = &doc["paths"]["/docs/files/{file_id}/documents"]["get"];
    let parameter = |name: &str| {
        list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(
        (
            parameter("limit")["minimum"].clone(),
            parameter("limit")["maximum"].clone()
        ),
        (json!(1), json!(200))
    );
    assert_eq!(parameter("cursor")["format"], "uuid");
    assert!(list["responses"]["401"].is_object());
    let content = &doc["paths"]["/docs/documents/{id}/content"]["get"];
    for header in content["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header")
    {
        assert_eq!(header["schema"]["type"], "string", "{header}: not nullable");
    }
    assert_eq!(
        doc["components"]["schemas"]["UploadForm"]["additionalProperties"],
        false
    );
}
