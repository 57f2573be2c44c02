//! The checker: what clients were told (the ledger) against what every
//! store holds (files and bpm in PostgreSQL, docs in MongoDB) and what the
//! index shows, by the unique id each operation wrote into its change.
//!
//! [`Snapshot::read`] reads the stores; [`compare`] is pure, so its rules
//! are tested without any server.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document as BsonDocument};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::client::{Kind, Operation};

/// Where the stores are.
pub struct Stores {
    /// files' database.
    pub files: PgPool,
    /// bpm's database.
    pub bpm: PgPool,
    /// auth's database (for its outbox).
    pub auth: PgPool,
    /// The index's database.
    pub index: PgPool,
    /// docs' database.
    pub docs: mongodb::Database,
}

/// A case file as `files` holds it.
#[derive(Debug, Clone)]
pub struct FileRow {
    /// Id.
    pub id: Uuid,
    /// `pending`, `active`, `failed`, `finished`.
    pub status: String,
    /// Version.
    pub version: i64,
    /// Description (the operation's marker).
    pub description: String,
}

/// A create-file saga as `files` holds it.
#[derive(Debug, Clone)]
pub struct SagaRow {
    /// Its file.
    pub file_id: Uuid,
    /// `running`, `compensating`, `completed`, `failed`.
    pub status: String,
    /// Current step.
    pub step: String,
    /// The document the first step attached, if it did.
    pub document_id: Option<Uuid>,
}

/// A phase visit as `bpm` holds it.
#[derive(Debug, Clone)]
pub struct VisitRow {
    /// Its file.
    pub file_id: Uuid,
    /// 1, 2, ...
    pub seq: i32,
    /// The phase entered.
    pub phase: String,
    /// `start`, `transition` or `migration`.
    pub entry: String,
    /// The transition's comment (the operation's marker).
    pub comment: Option<String>,
}

/// A document as `docs` holds it.
#[derive(Debug, Clone)]
pub struct DocumentRow {
    /// Id.
    pub id: String,
    /// Its file.
    pub file_id: String,
    /// How many versions it says it has.
    pub version_count: i64,
    /// Each version: number and SHA-256.
    pub versions: Vec<(i64, String)>,
}

/// A file as the index holds it.
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// Id.
    pub id: Uuid,
    /// The file's version (None for a placeholder).
    pub version: Option<i64>,
    /// The file's status.
    pub status: Option<String>,
    /// The whole read-side document.
    pub document: Value,
}

/// Everything the stores hold that the checker compares.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// files: files.
    pub files: Vec<FileRow>,
    /// files: sagas.
    pub sagas: Vec<SagaRow>,
    /// bpm: process versions by file.
    pub processes: Vec<(Uuid, i64)>,
    /// bpm: phase visits.
    pub visits: Vec<VisitRow>,
    /// docs: documents.
    pub documents: Vec<DocumentRow>,
    /// docs: staged uploads (id, SHA-256).
    pub uploads: Vec<(String, String)>,
    /// Unsent outbox messages by service.
    pub unsent: Vec<(String, i64)>,
    /// The index.
    pub index: Vec<IndexRow>,
    /// The index's timeline: entries by file and event type.
    pub timeline: Vec<(Uuid, String, i64)>,
}

impl Snapshot {
    /// Reads the stores.
    pub async fn read(stores: &Stores) -> anyhow::Result<Self> {
        let files = sqlx::query_as::<_, (Uuid, String, i64, String)>(
            "SELECT id, status, version, description FROM files",
        )
        .fetch_all(&stores.files)
        .await
        .context("read files")?
        .into_iter()
        .map(|(id, status, version, description)| FileRow {
            id,
            status,
            version,
            description,
        })
        .collect();
        let sagas = sqlx::query_as::<_, (Uuid, String, String, Option<Uuid>)>(
            "SELECT file_id, status, step, document_id FROM file_sagas",
        )
        .fetch_all(&stores.files)
        .await
        .context("read sagas")?
        .into_iter()
        .map(|(file_id, status, step, document_id)| SagaRow {
            file_id,
            status,
            step,
            document_id,
        })
        .collect();
        let processes = sqlx::query_as("SELECT file_id, version FROM processes")
            .fetch_all(&stores.bpm)
            .await
            .context("read processes")?;
        let visits = sqlx::query_as::<_, (Uuid, i32, String, String, Option<String>)>(
            "SELECT file_id, seq, phase_key, entry, comment FROM phase_visits ORDER BY file_id, seq",
        )
        .fetch_all(&stores.bpm)
        .await
        .context("read phase visits")?
        .into_iter()
        .map(|(file_id, seq, phase, entry, comment)| VisitRow {
            file_id,
            seq,
            phase,
            entry,
            comment,
        })
        .collect();

        let mut documents = Vec::new();
        let mut cursor = stores
            .docs
            .collection::<BsonDocument>("documents")
            .find(doc! {})
            .await
            .context("read documents")?;
        while let Some(document) = cursor.try_next().await.context("read documents")? {
            let versions = document
                .get_array("versions")
                .into_iter()
                .flatten()
                .filter_map(Bson::as_document)
                .map(|v| {
                    (
                        number(v.get("number")),
                        v.get_str("sha256").unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            documents.push(DocumentRow {
                id: document.get_str("_id").unwrap_or_default().to_owned(),
                file_id: document.get_str("file_id").unwrap_or_default().to_owned(),
                version_count: number(document.get("version_count")),
                versions,
            });
        }
        let mut uploads = Vec::new();
        let mut cursor = stores
            .docs
            .collection::<BsonDocument>("uploads")
            .find(doc! {"sha256": {"$exists": true}})
            .await
            .context("read uploads")?;
        while let Some(upload) = cursor.try_next().await.context("read uploads")? {
            if let (Ok(id), Ok(sha)) = (upload.get_str("_id"), upload.get_str("sha256")) {
                uploads.push((id.to_owned(), sha.to_owned()));
            }
        }

        let mut unsent = Vec::new();
        for (name, pool) in [
            ("files", &stores.files),
            ("bpm", &stores.bpm),
            ("auth", &stores.auth),
        ] {
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
                    .fetch_one(pool)
                    .await
                    .with_context(|| format!("read {name}'s outbox"))?;
            unsent.push((name.to_owned(), count));
        }
        let count = stores
            .docs
            .collection::<BsonDocument>("messaging_outbox")
            .count_documents(doc! {"sent_at": Bson::Null})
            .await
            .context("read docs' outbox")?;
        unsent.push(("docs".to_owned(), i64::try_from(count).unwrap_or(i64::MAX)));

        let index = sqlx::query_as::<
            _,
            (Uuid, Option<i64>, Option<String>, sqlx::types::Json<Value>),
        >("SELECT id, version, status, document FROM index_files")
        .fetch_all(&stores.index)
        .await
        .context("read the index")?
        .into_iter()
        .map(|(id, version, status, document)| IndexRow {
            id,
            version,
            status,
            document: document.0,
        })
        .collect();
        let timeline = sqlx::query_as(
            "SELECT file_id, message_type, count(*) FROM index_timeline GROUP BY file_id, message_type",
        )
        .fetch_all(&stores.index)
        .await
        .context("read the index's timeline")?;
        Ok(Self {
            files,
            sagas,
            processes,
            visits,
            documents,
            uploads,
            unsent,
            index,
            timeline,
        })
    }
}

/// What the checker found; every list holds one line per finding.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    /// An acknowledged change the stores do not hold (or hold under
    /// another id than the client was told).
    pub lost: Vec<String>,
    /// A change held more than once (acknowledged or not).
    pub duplicated: Vec<String>,
    /// A file still pending, a saga still running or compensating, an
    /// outbox message still unsent.
    pub stuck: Vec<String>,
    /// Stores that disagree with each other about a saga's effects (an
    /// active file without its process or first document, a failed one
    /// that kept them, a document's versions out of sequence, an orphan).
    pub inconsistent: Vec<String>,
    /// The index disagrees with the services.
    pub index: Vec<String>,
    /// Files by status.
    pub files: BTreeMap<String, u64>,
}

impl Findings {
    /// Whether nothing is wrong.
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.stuck.is_empty()
            && self.inconsistent.is_empty()
            && self.index.is_empty()
    }

    /// Whether something may still be on its way (a saga running, an
    /// outbox not drained, a store or the index behind): the settle loop
    /// waits while this holds. Lost and duplicated changes do not heal.
    pub fn settling(&self) -> bool {
        !self.stuck.is_empty() || !self.index.is_empty() || !self.inconsistent.is_empty()
    }
}

/// Compares `operations` (what clients were told) with `snapshot` (what
/// the stores hold).
pub fn compare(snapshot: &Snapshot, operations: &[Operation]) -> Findings {
    let mut findings = Findings::default();
    let mut files_by_marker: HashMap<&str, Vec<Uuid>> = HashMap::new();
    let mut files: HashMap<Uuid, &FileRow> = HashMap::new();
    for file in &snapshot.files {
        *findings.files.entry(file.status.clone()).or_default() += 1;
        files.insert(file.id, file);
        files_by_marker
            .entry(file.description.as_str())
            .or_default()
            .push(file.id);
    }
    let processes: HashMap<Uuid, i64> = snapshot.processes.iter().copied().collect();
    // The current phase and the number of visits of each process.
    let mut current: HashMap<Uuid, (&str, usize)> = HashMap::new();
    let mut visits_by_comment: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut visits: Vec<&VisitRow> = snapshot.visits.iter().collect();
    visits.sort_by_key(|v| (v.file_id, v.seq));
    for visit in visits {
        let entry = current.entry(visit.file_id).or_insert(("", 0));
        *entry = (visit.phase.as_str(), entry.1 + 1);
        if let Some(comment) = &visit.comment {
            visits_by_comment
                .entry(comment.as_str())
                .or_default()
                .push(visit.phase.as_str());
        }
    }
    // (document, file, number) of every version, by content.
    let mut versions_by_sha: HashMap<&str, Vec<(&str, &str, i64)>> = HashMap::new();
    for document in &snapshot.documents {
        for (number, sha) in &document.versions {
            versions_by_sha.entry(sha.as_str()).or_default().push((
                document.id.as_str(),
                document.file_id.as_str(),
                *number,
            ));
        }
    }
    let mut uploads_by_sha: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, sha) in &snapshot.uploads {
        uploads_by_sha
            .entry(sha.as_str())
            .or_default()
            .push(id.as_str());
    }

    // What each client was told, operation by operation.
    for op in operations {
        let told = if op.acknowledged() {
            "acknowledged"
        } else {
            "unacknowledged"
        };
        let what = format!("{} {} ({told})", op.kind.name(), op.id);
        let marker = op.marker();
        let sha = op.sha256.as_deref().unwrap_or_default();
        match op.kind {
            Kind::StageUpload => {
                // Attached by its saga at most once.
                let attached = versions_by_sha.get(sha).map_or(0, Vec::len);
                if attached > 1 {
                    findings
                        .duplicated
                        .push(format!("{what}: attached {attached} times"));
                }
                let held = uploads_by_sha.get(sha).cloned().unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    let told = op.upload_id.map(|id| id.to_string());
                    (told.as_deref() != held.first().copied())
                        .then(|| format!("told upload {told:?}, docs holds {held:?}"))
                });
            }
            Kind::CreateFile => {
                let held = files_by_marker
                    .get(marker.as_str())
                    .cloned()
                    .unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    (op.file_id.as_ref() != held.first())
                        .then(|| format!("told file {:?}, files holds {held:?}", op.file_id))
                });
            }
            Kind::AddDocument => {
                let held = versions_by_sha.get(sha).cloned().unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    let &(document, file, number) = held.first()?;
                    let same = op.document_id.map(|d| d.to_string()).as_deref() == Some(document)
                        && op.version.map(i64::from) == Some(number)
                        && op.file_id.map(|f| f.to_string()).as_deref() == Some(file);
                    (!same).then(|| {
                        format!(
                            "told document {:?} version {:?}, docs holds {document} version {number} of file {file}",
                            op.document_id, op.version
                        )
                    })
                });
            }
            Kind::ChangePhase => {
                let held = visits_by_comment
                    .get(marker.as_str())
                    .cloned()
                    .unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    (op.to_phase.as_deref() != held.first().copied()).then(|| {
                        format!(
                            "asked for {:?}, bpm entered {:?}",
                            op.to_phase,
                            held.first()
                        )
                    })
                });
            }
        }
    }

    // Every saga ended, and its effects agree with its outcome.
    let sagas: HashMap<Uuid, &SagaRow> = snapshot.sagas.iter().map(|s| (s.file_id, s)).collect();
    let mut documents_of: HashMap<&str, Vec<(String, i64)>> = HashMap::new();
    let document_ids: HashMap<&str, &str> = snapshot
        .documents
        .iter()
        .map(|d| (d.id.as_str(), d.file_id.as_str()))
        .collect();
    for document in &snapshot.documents {
        documents_of
            .entry(document.file_id.as_str())
            .or_default()
            .push((document.id.clone(), document.version_count));
        let mut numbers: Vec<i64> = document.versions.iter().map(|(n, _)| *n).collect();
        numbers.sort_unstable();
        if numbers != (1..=document.version_count).collect::<Vec<_>>() {
            findings.inconsistent.push(format!(
                "document {} of file {}: version_count {}, versions {numbers:?}",
                document.id, document.file_id, document.version_count
            ));
        }
        if Uuid::parse_str(&document.file_id).map_or(true, |f| !files.contains_key(&f)) {
            findings.inconsistent.push(format!(
                "document {} belongs to file {}, which files does not hold",
                document.id, document.file_id
            ));
        }
    }
    let with_documents: HashSet<&str> = documents_of.keys().copied().collect();
    for file in &snapshot.files {
        let id = file.id;
        let saga = sagas.get(&id);
        if file.status == "pending" {
            findings.stuck.push(format!(
                "file {id} still pending (saga {:?})",
                saga.map(|s| (&s.status, &s.step))
            ));
        }
        if let Some(saga) = saga {
            if saga.status == "running" || saga.status == "compensating" {
                findings.stuck.push(format!(
                    "saga of file {id} still {} at {}",
                    saga.status, saga.step
                ));
            }
        }
        let has_process = processes.contains_key(&id);
        match file.status.as_str() {
            "active" | "finished" => {
                if !has_process {
                    findings.inconsistent.push(format!(
                        "file {id} is {} but bpm has no process",
                        file.status
                    ));
                }
                if let Some(document) = saga.and_then(|s| s.document_id) {
                    if document_ids.get(document.to_string().as_str())
                        != Some(&id.to_string().as_str())
                    {
                        findings.inconsistent.push(format!(
                            "file {id} is {} but its first document {document} is not in docs",
                            file.status
                        ));
                    }
                }
            }
            "failed" => {
                if has_process {
                    findings
                        .inconsistent
                        .push(format!("file {id} failed but bpm kept its process"));
                }
                if with_documents.contains(id.to_string().as_str()) {
                    findings
                        .inconsistent
                        .push(format!("file {id} failed but docs kept documents of it"));
                }
            }
            _ => {}
        }
    }
    for (file, _) in &snapshot.processes {
        if !files.contains_key(file) {
            findings.inconsistent.push(format!(
                "bpm has a process for file {file}, which files does not hold"
            ));
        }
    }
    for (service, count) in &snapshot.unsent {
        if *count > 0 {
            findings
                .stuck
                .push(format!("{service}'s outbox holds {count} unsent messages"));
        }
    }

    // The index: every file as files, bpm and docs hold it.
    let index: HashMap<Uuid, &IndexRow> = snapshot.index.iter().map(|r| (r.id, r)).collect();
    for file in &snapshot.files {
        let id = file.id;
        let Some(row) = index.get(&id) else {
            findings
                .index
                .push(format!("file {id} is not in the index"));
            continue;
        };
        if row.version != Some(file.version) || row.status.as_deref() != Some(&file.status) {
            findings.index.push(format!(
                "file {id}: files has {} v{}, the index {:?} v{:?}",
                file.status, file.version, row.status, row.version
            ));
        }
        let process = &row.document["process"];
        match (processes.get(&id), process.is_null()) {
            (Some(version), false) => {
                let (phase, visits) = current.get(&id).copied().unwrap_or_default();
                let shown = (
                    process["process_version"].as_i64(),
                    process["phase"]["key"].as_str().unwrap_or_default(),
                    process["history"].as_array().map_or(0, Vec::len),
                );
                if shown != (Some(*version), phase, visits) {
                    findings.index.push(format!(
                        "file {id}: bpm has v{version} in {phase} after {visits} visits, the index {shown:?}"
                    ));
                }
            }
            (Some(version), true) => findings.index.push(format!(
                "file {id}: bpm has process v{version}, the index none"
            )),
            (None, false) => findings.index.push(format!(
                "file {id}: the index shows a process bpm does not have"
            )),
            (None, true) => {}
        }
        let mut held = documents_of
            .get(id.to_string().as_str())
            .cloned()
            .unwrap_or_default();
        held.sort();
        let mut shown: Vec<(String, i64)> = row.document["documents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["removed_at"].is_null())
            .map(|d| {
                (
                    d["id"].as_str().unwrap_or_default().to_owned(),
                    d["version"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        shown.sort();
        if held != shown {
            findings.index.push(format!(
                "file {id}: docs holds {held:?}, the index shows {shown:?}"
            ));
        }
    }

    // Events: one per change (a change announced twice under two message
    // ids is doubled, even if every store holds it once).
    let mut events: HashMap<(Uuid, &str), i64> = HashMap::new();
    for (file, kind, count) in &snapshot.timeline {
        events.insert((*file, kind.as_str()), *count);
    }
    let event = |file: Uuid, kind: &str| events.get(&(file, kind)).copied().unwrap_or(0);
    let mut transitions: HashMap<Uuid, i64> = HashMap::new();
    for visit in &snapshot.visits {
        if visit.entry == "transition" {
            *transitions.entry(visit.file_id).or_default() += 1;
        }
    }
    for file in &snapshot.files {
        let id = file.id;
        let mut expected = vec![("files.FileCreated.v1", 1)];
        if file.status == "active" {
            let versions: i64 = snapshot
                .documents
                .iter()
                .filter(|d| d.file_id == id.to_string())
                .map(|d| d.versions.len() as i64)
                .sum();
            let added =
                event(id, "docs.DocumentAdded.v1") + event(id, "docs.DocumentVersionAdded.v1");
            expected.push(("bpm.ProcessStarted.v1", 1));
            expected.push((
                "bpm.PhaseChanged.v1",
                transitions.get(&id).copied().unwrap_or(0),
            ));
            if added != versions {
                let line = format!(
                    "file {id}: docs holds {versions} versions, the timeline has {added} document events"
                );
                if added > versions {
                    findings.duplicated.push(line);
                } else {
                    findings.index.push(line);
                }
            }
        }
        for (kind, want) in expected {
            let got = event(id, kind);
            if got > want {
                findings.duplicated.push(format!(
                    "file {id}: {got} {kind} in the timeline for {want} change(s)"
                ));
            } else if got < want {
                findings.index.push(format!(
                    "file {id}: {got} {kind} in the timeline for {want} change(s)"
                ));
            }
        }
    }
    findings
}

/// The lost/duplicated verdict of one operation whose change is held
/// `held` times; `mismatch` says how the one held differs from what the
/// client was told, if it does.
fn judge(
    findings: &mut Findings,
    op: &Operation,
    what: &str,
    held: usize,
    mismatch: impl FnOnce() -> Option<String>,
) {
    if held > 1 {
        findings
            .duplicated
            .push(format!("{what}: held {held} times"));
    } else if op.acknowledged() {
        if held == 0 {
            findings.lost.push(format!("{what}: not held"));
        } else if let Some(difference) = mismatch() {
            findings.lost.push(format!("{what}: {difference}"));
        }
    }
}

fn number(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => -1,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::client::Outcome;

    fn acknowledged(kind: Kind) -> Operation {
        let mut op = Operation::new(kind, "stream");
        op.outcome = Outcome::Acknowledged { status: 201 };
        op
    }

    fn unknown(kind: Kind) -> Operation {
        Operation::new(kind, "stream")
    }

    /// An active file created by `op`, with its process in `initial` and
    /// its first document, indexed as the services hold it.
    fn active_file(snapshot: &mut Snapshot, op: &Operation, file: Uuid) {
        let document = Uuid::new_v4();
        snapshot.files.push(FileRow {
            id: file,
            status: "active".into(),
            version: 3,
            description: op.marker(),
        });
        snapshot.sagas.push(SagaRow {
            file_id: file,
            status: "completed".into(),
            step: "start_process".into(),
            document_id: Some(document),
        });
        snapshot.processes.push((file, 1));
        snapshot.visits.push(VisitRow {
            file_id: file,
            seq: 1,
            phase: "initial".into(),
            entry: "start".into(),
            comment: None,
        });
        snapshot.documents.push(DocumentRow {
            id: document.to_string(),
            file_id: file.to_string(),
            version_count: 1,
            versions: vec![(1, "aa".into())],
        });
        snapshot.index.push(IndexRow {
            id: file,
            version: Some(3),
            status: Some("active".into()),
            document: json!({
                "process": {"process_version": 1, "phase": {"key": "initial"}, "history": [{}]},
                "documents": [{"id": document.to_string(), "version": 1}],
            }),
        });
        for kind in [
            "files.FileCreated.v1",
            "bpm.ProcessStarted.v1",
            "docs.DocumentAdded.v1",
        ] {
            snapshot.timeline.push((file, kind.into(), 1));
        }
    }

    #[test]
    fn an_acknowledged_file_held_once_and_agreed_on_everywhere_is_clean() {
        // given
        let mut op = acknowledged(Kind::CreateFile);
        let file = Uuid::new_v4();
        op.file_id = Some(file);
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, file);
        // when
        let findings = compare(&snapshot, &[op]);
        // then
        assert!(findings.clean(), "{findings:?}");
        assert_eq!(findings.files.get("active"), Some(&1));
    }

    #[test]
    fn an_acknowledged_file_missing_from_files_is_lost() {
        let mut op = acknowledged(Kind::CreateFile);
        op.file_id = Some(Uuid::new_v4());
        let findings = compare(&Snapshot::default(), &[op]);
        assert_eq!(findings.lost.len(), 1, "{findings:?}");
    }

    #[test]
    fn an_acknowledged_file_held_under_another_id_is_lost() {
        let mut op = acknowledged(Kind::CreateFile);
        op.file_id = Some(Uuid::new_v4());
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, Uuid::new_v4());
        let findings = compare(&snapshot, &[op]);
        assert_eq!(findings.lost.len(), 1, "{findings:?}");
    }

    #[test]
    fn a_file_created_twice_by_one_operation_is_duplicated_even_unacknowledged() {
        let op = unknown(Kind::CreateFile);
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, Uuid::new_v4());
        active_file(&mut snapshot, &op, Uuid::new_v4());
        let findings = compare(&snapshot, &[op]);
        assert_eq!(findings.duplicated.len(), 1, "{findings:?}");
        assert!(findings.lost.is_empty());
    }

    #[test]
    fn an_unacknowledged_change_may_be_absent_or_held_once() {
        let absent = unknown(Kind::ChangePhase);
        let once = unknown(Kind::CreateFile);
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &once, Uuid::new_v4());
        let findings = compare(&snapshot, &[absent, once]);
        assert!(findings.clean(), "{findings:?}");
    }

    #[test]
    fn a_document_version_stored_twice_is_duplicated_and_out_of_sequence() {
        // given an acknowledged version 2 whose content docs holds as 2 and 3
        let creator = acknowledged(Kind::CreateFile);
        let file = Uuid::new_v4();
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &creator, file);
        let mut op = acknowledged(Kind::AddDocument);
        op.file_id = Some(file);
        op.sha256 = Some("bb".into());
        op.document_id = Some(Uuid::new_v4());
        op.version = Some(2);
        snapshot.documents.push(DocumentRow {
            id: op.document_id.unwrap().to_string(),
            file_id: file.to_string(),
            version_count: 3,
            versions: vec![(1, "cc".into()), (2, "bb".into()), (2, "bb".into())],
        });
        // when
        let findings = compare(&snapshot, &[op]);
        // then
        assert_eq!(findings.duplicated.len(), 1, "{findings:?}");
        assert_eq!(findings.inconsistent.len(), 1, "{findings:?}");
    }

    #[test]
    fn an_acknowledged_phase_change_bpm_does_not_hold_is_lost_and_one_held_twice_duplicated() {
        let mut lost = acknowledged(Kind::ChangePhase);
        lost.to_phase = Some("technical_analysis".into());
        let twice = unknown(Kind::ChangePhase);
        let file = Uuid::new_v4();
        let mut snapshot = Snapshot::default();
        for seq in [1, 2] {
            snapshot.visits.push(VisitRow {
                file_id: file,
                seq,
                phase: "rejected".into(),
                entry: "transition".into(),
                comment: Some(twice.marker()),
            });
        }
        let findings = compare(&snapshot, &[lost, twice]);
        assert_eq!(findings.lost.len(), 1, "{findings:?}");
        assert_eq!(findings.duplicated.len(), 1, "{findings:?}");
    }

    #[test]
    fn a_pending_file_a_running_saga_and_an_unsent_outbox_are_stuck() {
        let op = acknowledged(Kind::CreateFile);
        let file = Uuid::new_v4();
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, file);
        snapshot.files[0].status = "pending".into();
        snapshot.sagas[0].status = "running".into();
        snapshot.unsent.push(("files".into(), 2));
        let findings = compare(&snapshot, &[]);
        assert_eq!(findings.stuck.len(), 3, "{findings:?}");
        assert!(findings.settling());
    }

    #[test]
    fn a_failed_file_that_kept_its_process_or_document_is_inconsistent() {
        let op = acknowledged(Kind::CreateFile);
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, Uuid::new_v4());
        snapshot.files[0].status = "failed".into();
        snapshot.index[0].status = Some("failed".into());
        let findings = compare(&snapshot, &[]);
        assert_eq!(findings.inconsistent.len(), 2, "{findings:?}");
    }

    #[test]
    fn an_index_behind_the_services_disagrees() {
        let op = acknowledged(Kind::CreateFile);
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, Uuid::new_v4());
        snapshot.index[0].version = Some(2);
        snapshot.index[0].document["process"]["phase"]["key"] = json!("validation");
        snapshot.index[0].document["documents"] = json!([]);
        let findings = compare(&snapshot, &[]);
        assert_eq!(findings.index.len(), 3, "{findings:?}");
        assert!(findings.lost.is_empty() && findings.duplicated.is_empty());
    }

    #[test]
    fn a_removed_document_kept_as_a_tombstone_in_the_index_is_not_shown() {
        let op = acknowledged(Kind::CreateFile);
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, Uuid::new_v4());
        let documents = snapshot.index[0].document["documents"].clone();
        let mut with_tombstone = documents.as_array().unwrap().clone();
        with_tombstone
            .push(json!({"id": "gone", "version": 1, "removed_at": "2026-01-01T00:00:00Z"}));
        snapshot.index[0].document["documents"] = json!(with_tombstone);
        let findings = compare(&snapshot, &[]);
        assert!(findings.clean(), "{findings:?}");
    }

    #[test]
    fn an_event_announced_twice_is_duplicated_and_a_missing_one_awaited() {
        // given an active file whose first document was announced twice
        // and whose process start never reached the timeline
        let op = acknowledged(Kind::CreateFile);
        let file = Uuid::new_v4();
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &op, file);
        snapshot.timeline = vec![
            (file, "files.FileCreated.v1".into(), 1),
            (file, "docs.DocumentAdded.v1".into(), 2),
        ];
        // when
        let findings = compare(&snapshot, &[]);
        // then
        assert_eq!(findings.duplicated.len(), 1, "{findings:?}");
        assert_eq!(findings.index.len(), 1, "{findings:?}");
    }

    #[test]
    fn an_upload_attached_to_two_documents_is_duplicated() {
        let mut upload = acknowledged(Kind::StageUpload);
        upload.sha256 = Some("aa".into());
        upload.upload_id = Some(Uuid::new_v4());
        let creator = acknowledged(Kind::CreateFile);
        let mut snapshot = Snapshot::default();
        active_file(&mut snapshot, &creator, Uuid::new_v4());
        snapshot
            .uploads
            .push((upload.upload_id.unwrap().to_string(), "aa".into()));
        let mut copy = snapshot.documents[0].clone();
        copy.id = Uuid::new_v4().to_string();
        snapshot.documents.push(copy);
        let findings = compare(&snapshot, &[upload]);
        assert!(
            findings
                .duplicated
                .iter()
                .any(|d| d.contains("attached 2 times")),
            "{findings:?}"
        );
    }
}
