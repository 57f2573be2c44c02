//! MongoDB adapters: metadata in collections (with the outbox in the same
//! multi-document transaction), content in a GridFS bucket.
//!
//! Collections: `documents` (one per document, its versions embedded),
//! `uploads` (staged uploads and their life), `files` (what `files.events`
//! said of each file), `content_trash` (contents of removed documents still
//! to delete), `file_guards` (see [`guard_file`]), the messaging library's
//! outbox and inbox, and the bucket `content` (`content.files`,
//! `content.chunks`). A content is stored under its upload's id for life.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::stream::TryStreamExt;
use mongodb::bson::{doc, Binary, Bson, Document as BsonDocument};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::gridfs::{GridFsBucket, GridFsUploadStream};
use mongodb::options::{GridFsBucketOptions, IndexOptions};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use tramita_messaging::mongo::OutboxWake;
use uuid::Uuid;

use crate::app::{
    Cause, ContentStore, ContentStream, ContentWriter, DocsStore, ReceivingUpload, StoreError,
};
use crate::domain::{
    Actor, Content, Document, DocumentEvent, DocumentId, DocumentName, FileId, FileStatus,
    KnownFile, MediaType, Sha256Digest, Upload, UploadId, UploadState, Version,
};

/// Name of the GridFS bucket holding contents.
pub const BUCKET: &str = "content";
/// Collection of documents.
pub const DOCUMENTS: &str = "documents";
/// Collection of uploads.
pub const UPLOADS: &str = "uploads";
/// Collection of known files.
pub const FILES: &str = "files";
/// Collection of contents to delete.
pub const CONTENT_TRASH: &str = "content_trash";
/// Collection of per-file documents every emitting transaction writes.
pub const FILE_GUARDS: &str = "file_guards";

const DUPLICATE_KEY: i32 = 11000;
const WRITE_CONFLICT: i32 = 112;
const NAMESPACE_EXISTS: i32 = 48;

/// The server's error code, if it gave one.
fn code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|e| e.code),
        _ => None,
    }
}

/// A conflict the whole transaction may pass by running again, else an
/// unexpected error with `what` as context.
fn classify(error: mongodb::error::Error, what: &'static str) -> StoreError {
    let conflict = error.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
        || code(&error) == Some(WRITE_CONFLICT);
    let error = anyhow::Error::new(error).context(what);
    if conflict {
        StoreError::Conflict(error)
    } else {
        StoreError::Unexpected(error)
    }
}

fn to_bson_time(time: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(time.timestamp_millis())
}

fn from_bson_time(time: mongodb::bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or_default()
}

fn parse_uuid(raw: &str, what: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(raw).with_context(|| format!("stored {what} {raw:?} is not a UUID"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActorDoc {
    id: String,
    name: String,
}

impl From<&Actor> for ActorDoc {
    fn from(actor: &Actor) -> Self {
        Self {
            id: actor.id.clone(),
            name: actor.name.clone(),
        }
    }
}

impl From<ActorDoc> for Actor {
    fn from(actor: ActorDoc) -> Self {
        Self {
            id: actor.id,
            name: actor.name,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionDoc {
    number: i64,
    content_id: String,
    media_type: String,
    size: i64,
    sha256: String,
    created_at: mongodb::bson::DateTime,
    created_by: ActorDoc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DocumentDoc {
    #[serde(rename = "_id")]
    id: String,
    file_id: String,
    name: String,
    version_count: i64,
    versions: Vec<VersionDoc>,
}

impl From<&Document> for DocumentDoc {
    fn from(document: &Document) -> Self {
        Self {
            id: document.id.0.to_string(),
            file_id: document.file_id.0.to_string(),
            name: document.name.as_str().to_owned(),
            version_count: i64::from(document.version_count()),
            versions: document
                .versions
                .iter()
                .map(|v| VersionDoc {
                    number: i64::from(v.number),
                    content_id: v.content.id.0.to_string(),
                    media_type: v.content.media_type.as_str().to_owned(),
                    size: v.content.size as i64,
                    sha256: v.content.sha256.as_str().to_owned(),
                    created_at: to_bson_time(v.created_at),
                    created_by: (&v.created_by).into(),
                })
                .collect(),
        }
    }
}

impl TryFrom<DocumentDoc> for Document {
    type Error = anyhow::Error;

    fn try_from(stored: DocumentDoc) -> anyhow::Result<Self> {
        let versions = stored
            .versions
            .into_iter()
            .map(|v| {
                Ok(Version {
                    number: u32::try_from(v.number).context("stored version number")?,
                    content: Content {
                        id: UploadId(parse_uuid(&v.content_id, "content id")?),
                        media_type: MediaType::parse(&v.media_type).context("stored media type")?,
                        size: u64::try_from(v.size).context("stored size")?,
                        sha256: Sha256Digest::parse(&v.sha256).context("stored digest")?,
                    },
                    created_at: from_bson_time(v.created_at),
                    created_by: v.created_by.into(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            !versions.is_empty(),
            "stored document {} has no versions",
            stored.id
        );
        Ok(Self {
            id: DocumentId(parse_uuid(&stored.id, "document id")?),
            file_id: FileId(parse_uuid(&stored.file_id, "file id")?),
            name: DocumentName::restore(stored.name),
            versions,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimDoc {
    file_id: String,
    document_id: String,
    at: mongodb::bson::DateTime,
}

/// An upload's record. `state`: `receiving`, `staged`, `claimed` or
/// `expired`; what was received is set when staged.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadDoc {
    #[serde(rename = "_id")]
    id: String,
    state: String,
    name: String,
    created_by: ActorDoc,
    started_at: mongodb::bson::DateTime,
    expires_at: mongodb::bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<mongodb::bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed: Option<ClaimDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_deleted: Option<bool>,
}

impl UploadDoc {
    /// The domain upload, or `None` while still receiving.
    fn into_upload(self) -> anyhow::Result<Option<Upload>> {
        let state = match self.state.as_str() {
            "receiving" => return Ok(None),
            "staged" => UploadState::Staged,
            "expired" => UploadState::Expired,
            "claimed" => {
                let claim = self.claimed.context("a claimed upload without its claim")?;
                UploadState::Claimed {
                    file_id: FileId(parse_uuid(&claim.file_id, "file id")?),
                    document_id: DocumentId(parse_uuid(&claim.document_id, "document id")?),
                    at: from_bson_time(claim.at),
                }
            }
            other => anyhow::bail!("stored upload state {other:?} is unknown"),
        };
        let id = UploadId(parse_uuid(&self.id, "upload id")?);
        let (Some(media_type), Some(size), Some(sha256), Some(created_at)) =
            (self.media_type, self.size, self.sha256, self.created_at)
        else {
            anyhow::bail!("upload {} is {} without its content", self.id, self.state);
        };
        Ok(Some(Upload {
            id,
            name: DocumentName::restore(self.name),
            content: Content {
                id,
                media_type: MediaType::parse(&media_type).context("stored media type")?,
                size: u64::try_from(size).context("stored size")?,
                sha256: Sha256Digest::parse(&sha256).context("stored digest")?,
            },
            created_at: from_bson_time(created_at),
            created_by: self.created_by.into(),
            expires_at: from_bson_time(self.expires_at),
            state,
        }))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileDoc {
    #[serde(rename = "_id")]
    id: String,
    status: String,
    version: i64,
}

impl TryFrom<FileDoc> for KnownFile {
    type Error = anyhow::Error;

    fn try_from(stored: FileDoc) -> anyhow::Result<Self> {
        Ok(Self {
            id: FileId(parse_uuid(&stored.id, "file id")?),
            status: FileStatus::parse(&stored.status)
                .with_context(|| format!("stored file status {:?} is unknown", stored.status))?,
            version: stored.version,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrashDoc {
    #[serde(rename = "_id")]
    id: String,
    at: mongodb::bson::DateTime,
}

/// Creates the collections (a transaction cannot create them on every
/// server) and the indexes. Safe to run from every replica at start.
pub async fn ensure_schema(db: &Database) -> anyhow::Result<()> {
    for name in [
        DOCUMENTS,
        UPLOADS,
        FILES,
        CONTENT_TRASH,
        FILE_GUARDS,
        "content.files",
        "content.chunks",
    ] {
        if let Err(error) = db.create_collection(name).await {
            if code(&error) != Some(NAMESPACE_EXISTS) {
                return Err(anyhow::Error::new(error).context(format!("create collection {name}")));
            }
        }
    }
    let index = |keys: BsonDocument, unique: bool| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().unique(unique).build())
            .build()
    };
    db.collection::<BsonDocument>(DOCUMENTS)
        .create_indexes([
            index(doc! {"file_id": 1, "name": 1}, true),
            index(doc! {"file_id": 1, "_id": 1}, false),
        ])
        .await
        .context("index documents")?;
    db.collection::<BsonDocument>(UPLOADS)
        .create_indexes([
            index(doc! {"state": 1, "expires_at": 1}, false),
            index(doc! {"state": 1, "claimed.at": 1}, false),
        ])
        .await
        .context("index uploads")?;
    // The indexes the GridFS specification prescribes, made here so range
    // reads are indexed before the first upload creates them.
    db.collection::<BsonDocument>("content.chunks")
        .create_index(index(doc! {"files_id": 1, "n": 1}, true))
        .await
        .context("index content chunks")?;
    db.collection::<BsonDocument>("content.files")
        .create_index(index(doc! {"filename": 1, "uploadDate": 1}, false))
        .await
        .context("index content files")?;
    Ok(())
}

/// Writes the guard document of `file` in `session`'s transaction. Every
/// transaction that emits messages about a file (events, and replies, which
/// are keyed by the file too) calls this first: two such transactions then
/// write a common document, so MongoDB makes the later one conflict unless
/// the earlier committed before it began, which is what keeps one file's
/// messages in commit order in the outbox (the contract of
/// `tramita_messaging::mongo::enqueue`).
pub async fn guard_file(
    session: &mut ClientSession,
    db: &Database,
    file: FileId,
) -> Result<(), StoreError> {
    let result = db
        .collection::<BsonDocument>(FILE_GUARDS)
        .update_one(
            doc! {"_id": file.0.to_string()},
            doc! {"$inc": {"writes": 1_i64}},
        )
        .upsert(true)
        .session(session)
        .await;
    match result {
        Ok(_) => Ok(()),
        // Two first writes of a file's guard raced.
        Err(error) if code(&error) == Some(DUPLICATE_KEY) => Err(StoreError::Conflict(
            anyhow::Error::new(error).context("guard the file's messages"),
        )),
        Err(error) => Err(classify(error, "guard the file's messages")),
    }
}

/// Writes `envelope` for `topic` to the outbox in `session`'s transaction,
/// after the file's guard (see [`guard_file`]).
pub async fn emit(
    session: &mut ClientSession,
    db: &Database,
    file: FileId,
    topic: &str,
    envelope: &tramita_messaging::Envelope,
) -> Result<(), StoreError> {
    guard_file(session, db, file).await?;
    tramita_messaging::mongo::enqueue(session, db, topic, envelope)
        .await
        .map_err(|error| {
            let transient = error.chain().any(|cause| {
                cause
                    .downcast_ref::<mongodb::error::Error>()
                    .is_some_and(|e| {
                        e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
                            || code(e) == Some(WRITE_CONFLICT)
                    })
            });
            if transient {
                StoreError::Conflict(error)
            } else {
                StoreError::Unexpected(error)
            }
        })
}

/// Documents, uploads and known files in MongoDB.
#[derive(Debug, Clone)]
pub struct MongoDocsStore {
    client: Client,
    db: Database,
    events_topic: String,
    documents: Collection<DocumentDoc>,
    uploads: Collection<UploadDoc>,
    files: Collection<FileDoc>,
    trash: Collection<TrashDoc>,
    relay: OutboxWake,
}

impl MongoDocsStore {
    /// A store in `db`, announcing on `events_topic` (full name), that wakes
    /// `relay` after each commit.
    pub fn new(client: Client, db: Database, events_topic: String, relay: OutboxWake) -> Self {
        Self {
            relay,
            documents: db.collection(DOCUMENTS),
            uploads: db.collection(UPLOADS),
            files: db.collection(FILES),
            trash: db.collection(CONTENT_TRASH),
            client,
            db,
            events_topic,
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Commit attempts when the server cannot tell whether a commit happened.
const COMMIT_ATTEMPTS: usize = 3;

impl DocsStore for MongoDocsStore {
    type Tx = ClientSession;

    async fn begin(&self) -> Result<ClientSession, StoreError> {
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(|e| classify(e, "start a session"))?;
        session
            .start_transaction()
            .await
            .map_err(|e| classify(e, "start a transaction"))?;
        Ok(session)
    }

    async fn commit(&self, mut tx: ClientSession) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match tx.commit_transaction().await {
                Ok(()) => {
                    self.relay.wake();
                    return Ok(());
                }
                // The commit is idempotent: asking again is how the driver
                // specification resolves an unknown outcome.
                Err(error)
                    if error.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT)
                        && attempt < COMMIT_ATTEMPTS =>
                {
                    tracing::debug!(error = %error, "commit outcome unknown; committing again");
                }
                Err(error) => return Err(classify(error, "commit")),
            }
        }
    }

    async fn known_file(&self, id: FileId) -> Result<Option<KnownFile>, StoreError> {
        let found = self
            .files
            .find_one(doc! {"_id": id.0.to_string()})
            .await
            .map_err(|e| classify(e, "find file"))?;
        Ok(found.map(KnownFile::try_from).transpose()?)
    }

    async fn file_in(
        &self,
        tx: &mut ClientSession,
        id: FileId,
    ) -> Result<Option<KnownFile>, StoreError> {
        let found = self
            .files
            .find_one(doc! {"_id": id.0.to_string()})
            .session(tx)
            .await
            .map_err(|e| classify(e, "find file"))?;
        Ok(found.map(KnownFile::try_from).transpose()?)
    }

    async fn save_file(&self, tx: &mut ClientSession, file: &KnownFile) -> Result<(), StoreError> {
        let id = file.id.0.to_string();
        self.files
            .replace_one(
                doc! {"_id": &id},
                FileDoc {
                    id: id.clone(),
                    status: file.status.as_str().to_owned(),
                    version: file.version,
                },
            )
            .upsert(true)
            .session(tx)
            .await
            .map_err(|e| classify(e, "save file"))?;
        Ok(())
    }

    async fn start_upload(&self, upload: &ReceivingUpload) -> Result<(), StoreError> {
        self.uploads
            .insert_one(UploadDoc {
                id: upload.id.0.to_string(),
                state: "receiving".into(),
                name: upload.name.as_str().to_owned(),
                created_by: (&upload.created_by).into(),
                started_at: to_bson_time(upload.started_at),
                expires_at: to_bson_time(upload.expires_at),
                created_at: None,
                media_type: None,
                size: None,
                sha256: None,
                claimed: None,
                content_deleted: None,
            })
            .await
            .map_err(|e| classify(e, "insert upload"))?;
        Ok(())
    }

    async fn stage_upload(&self, upload: &Upload) -> Result<(), StoreError> {
        let result = self
            .uploads
            .update_one(
                doc! {"_id": upload.id.0.to_string(), "state": "receiving"},
                doc! {"$set": {
                    "state": "staged",
                    "created_at": to_bson_time(upload.created_at),
                    "expires_at": to_bson_time(upload.expires_at),
                    "media_type": upload.content.media_type.as_str(),
                    "size": upload.content.size as i64,
                    "sha256": upload.content.sha256.as_str(),
                }},
            )
            .await
            .map_err(|e| classify(e, "stage upload"))?;
        if result.matched_count == 0 {
            return Err(StoreError::Conflict(anyhow::anyhow!(
                "upload {} is no longer receiving (swept as expired?)",
                upload.id.0
            )));
        }
        Ok(())
    }

    async fn discard_upload(&self, id: UploadId) -> Result<(), StoreError> {
        self.uploads
            .delete_one(doc! {"_id": id.0.to_string()})
            .await
            .map_err(|e| classify(e, "delete upload"))?;
        Ok(())
    }

    async fn upload_in(
        &self,
        tx: &mut ClientSession,
        id: UploadId,
    ) -> Result<Option<Upload>, StoreError> {
        let found = self
            .uploads
            .find_one(doc! {"_id": id.0.to_string()})
            .session(tx)
            .await
            .map_err(|e| classify(e, "find upload"))?;
        Ok(match found {
            Some(stored) => stored.into_upload()?,
            None => None,
        })
    }

    async fn save_claim(&self, tx: &mut ClientSession, upload: &Upload) -> Result<(), StoreError> {
        let UploadState::Claimed {
            file_id,
            document_id,
            at,
        } = &upload.state
        else {
            return Err(anyhow::anyhow!("saving the claim of an unclaimed upload").into());
        };
        let result = self
            .uploads
            .update_one(
                doc! {"_id": upload.id.0.to_string(), "state": "staged"},
                doc! {"$set": {
                    "state": "claimed",
                    "claimed": {
                        "file_id": file_id.0.to_string(),
                        "document_id": document_id.0.to_string(),
                        "at": to_bson_time(*at),
                    },
                }},
            )
            .session(tx)
            .await
            .map_err(|e| classify(e, "claim upload"))?;
        if result.matched_count == 0 {
            return Err(StoreError::Conflict(anyhow::anyhow!(
                "upload {} changed since it was read",
                upload.id.0
            )));
        }
        Ok(())
    }

    async fn document(&self, id: DocumentId) -> Result<Option<Document>, StoreError> {
        let found = self
            .documents
            .find_one(doc! {"_id": id.0.to_string()})
            .await
            .map_err(|e| classify(e, "find document"))?;
        Ok(found.map(Document::try_from).transpose()?)
    }

    async fn documents_of(
        &self,
        file: FileId,
        after: Option<DocumentId>,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        let mut filter = doc! {"file_id": file.0.to_string()};
        if let Some(after) = after {
            filter.insert("_id", doc! {"$gt": after.0.to_string()});
        }
        let found: Vec<DocumentDoc> = self
            .documents
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(limit as i64)
            .await
            .map_err(|e| classify(e, "list documents"))?
            .try_collect()
            .await
            .map_err(|e| classify(e, "read documents"))?;
        Ok(found
            .into_iter()
            .map(Document::try_from)
            .collect::<anyhow::Result<_>>()?)
    }

    async fn document_in(
        &self,
        tx: &mut ClientSession,
        id: DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        let found = self
            .documents
            .find_one(doc! {"_id": id.0.to_string()})
            .session(tx)
            .await
            .map_err(|e| classify(e, "find document"))?;
        Ok(found.map(Document::try_from).transpose()?)
    }

    async fn document_named_in(
        &self,
        tx: &mut ClientSession,
        file: FileId,
        name: &DocumentName,
    ) -> Result<Option<Document>, StoreError> {
        let found = self
            .documents
            .find_one(doc! {"file_id": file.0.to_string(), "name": name.as_str()})
            .session(tx)
            .await
            .map_err(|e| classify(e, "find document by name"))?;
        Ok(found.map(Document::try_from).transpose()?)
    }

    async fn save_document(
        &self,
        tx: &mut ClientSession,
        document: &Document,
        previous_versions: u32,
    ) -> Result<(), StoreError> {
        let stored = DocumentDoc::from(document);
        if previous_versions == 0 {
            return match self.documents.insert_one(stored).session(tx).await {
                Ok(_) => Ok(()),
                Err(error) if code(&error) == Some(DUPLICATE_KEY) => Err(StoreError::Conflict(
                    anyhow::Error::new(error).context("another document took the name"),
                )),
                Err(error) => Err(classify(error, "insert document")),
            };
        }
        let result = self
            .documents
            .replace_one(
                doc! {"_id": &stored.id, "version_count": i64::from(previous_versions)},
                stored,
            )
            .session(tx)
            .await
            .map_err(|e| classify(e, "save document"))?;
        if result.matched_count == 0 {
            return Err(StoreError::Conflict(anyhow::anyhow!(
                "document {} changed since it was read",
                document.id.0
            )));
        }
        Ok(())
    }

    async fn remove_document(
        &self,
        tx: &mut ClientSession,
        document: &Document,
    ) -> Result<(), StoreError> {
        let result = self
            .documents
            .delete_one(doc! {
                "_id": document.id.0.to_string(),
                "version_count": i64::from(document.version_count()),
            })
            .session(&mut *tx)
            .await
            .map_err(|e| classify(e, "delete document"))?;
        if result.deleted_count == 0 {
            return Err(StoreError::Conflict(anyhow::anyhow!(
                "document {} changed since it was read",
                document.id.0
            )));
        }
        let at = mongodb::bson::DateTime::now();
        let trash: Vec<TrashDoc> = document
            .versions
            .iter()
            .map(|v| TrashDoc {
                id: v.content.id.0.to_string(),
                at,
            })
            .collect();
        self.trash
            .insert_many(trash)
            .session(tx)
            .await
            .map_err(|e| classify(e, "trash contents"))?;
        Ok(())
    }

    async fn record(
        &self,
        tx: &mut ClientSession,
        event: &DocumentEvent,
        cause: &Cause,
    ) -> Result<(), StoreError> {
        let envelope = crate::adapters::kafka::event_envelope(event, cause);
        emit(
            tx,
            &self.db,
            event.document().file_id,
            &self.events_topic,
            &envelope,
        )
        .await
    }

    async fn expire_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError> {
        self.uploads
            .update_many(
                doc! {
                    "state": {"$in": ["receiving", "staged"]},
                    "expires_at": {"$lte": to_bson_time(now)},
                },
                doc! {"$set": {"state": "expired", "content_deleted": false}},
            )
            .await
            .map_err(|e| classify(e, "expire uploads"))?;
        let expired: Vec<UploadDoc> = self
            .uploads
            .find(doc! {"state": "expired", "content_deleted": false})
            .limit(limit as i64)
            .await
            .map_err(|e| classify(e, "find expired uploads"))?
            .try_collect()
            .await
            .map_err(|e| classify(e, "read expired uploads"))?;
        Ok(expired
            .iter()
            .map(|u| parse_uuid(&u.id, "upload id").map(UploadId))
            .collect::<anyhow::Result<_>>()?)
    }

    async fn content_deleted(&self, id: UploadId) -> Result<(), StoreError> {
        self.uploads
            .update_one(
                doc! {"_id": id.0.to_string(), "state": "expired"},
                doc! {"$set": {"content_deleted": true}},
            )
            .await
            .map_err(|e| classify(e, "mark content deleted"))?;
        Ok(())
    }

    async fn forget_uploads(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = to_bson_time(before);
        let result = self
            .uploads
            .delete_many(doc! {"$or": [
                {"state": "claimed", "claimed.at": {"$lt": before}},
                {"state": "expired", "content_deleted": true, "expires_at": {"$lt": before}},
            ]})
            .await
            .map_err(|e| classify(e, "forget uploads"))?;
        Ok(result.deleted_count)
    }

    async fn trashed_contents(&self, limit: usize) -> Result<Vec<UploadId>, StoreError> {
        let trashed: Vec<TrashDoc> = self
            .trash
            .find(doc! {})
            .limit(limit as i64)
            .await
            .map_err(|e| classify(e, "find trashed contents"))?
            .try_collect()
            .await
            .map_err(|e| classify(e, "read trashed contents"))?;
        Ok(trashed
            .iter()
            .map(|t| parse_uuid(&t.id, "content id").map(UploadId))
            .collect::<anyhow::Result<_>>()?)
    }

    async fn untrash(&self, id: UploadId) -> Result<(), StoreError> {
        self.trash
            .delete_one(doc! {"_id": id.0.to_string()})
            .await
            .map_err(|e| classify(e, "untrash content"))?;
        Ok(())
    }
}

/// The GridFS files-collection fields a read needs.
#[derive(Debug, Deserialize)]
struct ContentFileDoc {
    length: i64,
    #[serde(rename = "chunkSize")]
    chunk_size: i64,
}

/// One GridFS chunk.
#[derive(Debug, Deserialize)]
struct ChunkDoc {
    n: i64,
    data: Binary,
}

/// Chunks fetched per round trip when reading: a few hundred KiB in memory
/// per download at the default chunk size, whatever the content's size.
const CHUNKS_PER_BATCH: u32 = 4;

/// Contents in a GridFS bucket.
#[derive(Debug, Clone)]
pub struct GridFsContentStore {
    bucket: GridFsBucket,
    files: Collection<ContentFileDoc>,
    chunks: Collection<ChunkDoc>,
}

impl GridFsContentStore {
    /// The bucket [`BUCKET`] of `db`.
    pub fn new(db: &Database) -> Self {
        Self {
            bucket: db.gridfs_bucket(
                GridFsBucketOptions::builder()
                    .bucket_name(BUCKET.to_owned())
                    .build(),
            ),
            files: db.collection(&format!("{BUCKET}.files")),
            chunks: db.collection(&format!("{BUCKET}.chunks")),
        }
    }
}

fn content_key(id: UploadId) -> Bson {
    Bson::String(id.0.to_string())
}

/// A content being written to GridFS, a chunk at a time.
pub struct GridFsWriter {
    stream: GridFsUploadStream,
}

impl std::fmt::Debug for GridFsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridFsWriter")
            .field("id", self.stream.id())
            .finish()
    }
}

impl ContentWriter for GridFsWriter {
    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use futures::io::AsyncWriteExt;
        self.stream
            .write_all(bytes)
            .await
            .context("write content chunk")
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        use futures::io::AsyncWriteExt;
        self.stream.close().await.context("close content")
    }

    async fn abort(mut self) -> anyhow::Result<()> {
        self.stream.abort().await.context("abort content")
    }
}

impl ContentStore for GridFsContentStore {
    type Writer = GridFsWriter;

    async fn writer(&self, id: UploadId, name: &DocumentName) -> anyhow::Result<GridFsWriter> {
        let stream = self
            .bucket
            .open_upload_stream(name.as_str())
            .id(content_key(id))
            .await
            .context("open content upload stream")?;
        Ok(GridFsWriter { stream })
    }

    async fn delete(&self, id: UploadId) -> anyhow::Result<()> {
        match self.bucket.delete(content_key(id)).await {
            Ok(()) => Ok(()),
            // The chunks are deleted even when the files document is not
            // there (a partial content, or a second delete).
            Err(error)
                if matches!(
                    error.kind.as_ref(),
                    ErrorKind::GridFs(mongodb::error::GridFsErrorKind::FileNotFound { .. })
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(anyhow::Error::new(error).context("delete content")),
        }
    }

    async fn read(&self, id: UploadId, start: u64, end: u64) -> anyhow::Result<ContentStream> {
        if start >= end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let file = self
            .files
            .find_one(doc! {"_id": content_key(id)})
            .await
            .context("find content")?
            .with_context(|| format!("content {} is missing", id.0))?;
        let chunk_size = u64::try_from(file.chunk_size)
            .ok()
            .filter(|size| *size > 0)
            .context("stored chunk size")?;
        let length = u64::try_from(file.length).context("stored length")?;
        anyhow::ensure!(
            end <= length,
            "range end {end} past the content's {length} bytes"
        );
        let first = start / chunk_size;
        let last = (end - 1) / chunk_size;
        let cursor = self
            .chunks
            .find(doc! {
                "files_id": content_key(id),
                "n": {"$gte": first as i64, "$lte": last as i64},
            })
            .sort(doc! {"n": 1})
            .projection(doc! {"_id": 0, "n": 1, "data": 1})
            .batch_size(CHUNKS_PER_BATCH)
            .await
            .context("find content chunks")?;
        let stream =
            futures::stream::try_unfold((cursor, first), move |(mut cursor, n)| async move {
                if n > last {
                    return Ok(None);
                }
                let chunk = cursor
                    .try_next()
                    .await
                    .context("read content chunk")?
                    .with_context(|| format!("chunk {n} of content {} is missing", id.0))?;
                anyhow::ensure!(
                    chunk.n == n as i64,
                    "chunk {n} of content {} is missing (found {})",
                    id.0,
                    chunk.n
                );
                let chunk_start = n * chunk_size;
                let data = chunk.data.bytes;
                let from = usize::try_from(start.saturating_sub(chunk_start))?;
                let to = usize::try_from((end - chunk_start).min(data.len() as u64))?;
                anyhow::ensure!(from <= to, "chunk {n} of content {} is short", id.0);
                let piece = if from == 0 && to == data.len() {
                    data
                } else {
                    data[from..to].to_vec()
                };
                Ok(Some((piece, (cursor, n + 1))))
            });
        Ok(Box::pin(stream))
    }
}
