//! The checker: what clients were told (the ledger) against what every
//! store holds (files and bpm in PostgreSQL, docs in MongoDB) and what the
//! index shows, by the unique id each operation wrote into its change.

use std::collections::{HashMap, HashSet};

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
    /// that kept them, a document's versions out of sequence).
    pub inconsistent: Vec<String>,
    /// The index disagrees with the services.
    pub index: Vec<String>,
    /// Files by status.
    pub files: HashMap<String, u64>,
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

    /// Only what is still moving: sagas running, outboxes not drained
    /// (the settle loop waits for these before it judges).
    pub fn settling(&self) -> bool {
        !self.stuck.is_empty() || !self.index.is_empty() || !self.inconsistent.is_empty()
    }
}

struct Version {
    document: String,
    file: String,
    number: i64,
}

/// Compares `operations` with the stores.
pub async fn check(stores: &Stores, operations: &[Operation]) -> anyhow::Result<Findings> {
    let mut findings = Findings::default();

    // files: every file and saga.
    let rows: Vec<(Uuid, String, i64, String)> =
        sqlx::query_as("SELECT id, status, version, description FROM files")
            .fetch_all(&stores.files)
            .await
            .context("read files")?;
    let mut by_marker: HashMap<String, Vec<Uuid>> = HashMap::new();
    let mut files: HashMap<Uuid, (String, i64)> = HashMap::new();
    for (id, status, version, description) in rows {
        *findings.files.entry(status.clone()).or_default() += 1;
        files.insert(id, (status, version));
        by_marker.entry(description).or_default().push(id);
    }
    let sagas: Vec<(Uuid, String, String, Option<Uuid>)> =
        sqlx::query_as("SELECT file_id, status, step, document_id FROM file_sagas")
            .fetch_all(&stores.files)
            .await
            .context("read sagas")?;

    // bpm: processes and their visits.
    let processes: HashMap<Uuid, i64> =
        sqlx::query_as::<_, (Uuid, i64)>("SELECT file_id, version FROM processes")
            .fetch_all(&stores.bpm)
            .await
            .context("read processes")?
            .into_iter()
            .collect();
    let visits: Vec<(Uuid, i32, String, Option<String>)> = sqlx::query_as(
        "SELECT file_id, seq, phase_key, comment FROM phase_visits ORDER BY file_id, seq",
    )
    .fetch_all(&stores.bpm)
    .await
    .context("read phase visits")?;
    let mut current_phase: HashMap<Uuid, (String, usize)> = HashMap::new();
    let mut by_comment: HashMap<String, Vec<String>> = HashMap::new();
    for (file, _, phase, comment) in &visits {
        let entry = current_phase.entry(*file).or_insert((String::new(), 0));
        entry.0 = phase.clone();
        entry.1 += 1;
        if let Some(comment) = comment {
            by_comment
                .entry(comment.clone())
                .or_default()
                .push(phase.clone());
        }
    }

    // docs: documents with their versions, uploads.
    let mut documents: HashMap<String, (String, i64, Vec<i64>)> = HashMap::new();
    let mut by_sha: HashMap<String, Vec<Version>> = HashMap::new();
    let mut cursor = stores
        .docs
        .collection::<BsonDocument>("documents")
        .find(doc! {})
        .await
        .context("read documents")?;
    while let Some(document) = cursor.try_next().await.context("read documents")? {
        let id = document.get_str("_id").unwrap_or_default().to_owned();
        let file = document.get_str("file_id").unwrap_or_default().to_owned();
        let count = number(document.get("version_count"));
        let mut numbers = Vec::new();
        for version in document.get_array("versions").into_iter().flatten() {
            let Some(version) = version.as_document() else {
                continue;
            };
            let n = number(version.get("number"));
            numbers.push(n);
            if let Ok(sha) = version.get_str("sha256") {
                by_sha.entry(sha.to_owned()).or_default().push(Version {
                    document: id.clone(),
                    file: file.clone(),
                    number: n,
                });
            }
        }
        documents.insert(id, (file, count, numbers));
    }
    let mut uploads_by_sha: HashMap<String, Vec<String>> = HashMap::new();
    let mut cursor = stores
        .docs
        .collection::<BsonDocument>("uploads")
        .find(doc! {"sha256": {"$exists": true}})
        .await
        .context("read uploads")?;
    while let Some(upload) = cursor.try_next().await.context("read uploads")? {
        if let (Ok(sha), Ok(id)) = (upload.get_str("sha256"), upload.get_str("_id")) {
            uploads_by_sha
                .entry(sha.to_owned())
                .or_default()
                .push(id.to_owned());
        }
    }

    // What each client was told, operation by operation.
    for op in operations {
        let told = if op.acknowledged() {
            "acknowledged"
        } else {
            "unacknowledged"
        };
        let what = format!("{} {} ({told})", op.kind.name(), op.id);
        match op.kind {
            Kind::StageUpload => {
                let held = op
                    .sha256
                    .as_ref()
                    .and_then(|sha| uploads_by_sha.get(sha))
                    .cloned()
                    .unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    let told = op.upload_id.map(|id| id.to_string());
                    (told.as_ref() != held.first())
                        .then(|| format!("told upload {told:?}, docs holds {held:?}"))
                });
            }
            Kind::CreateFile => {
                let held = by_marker
                    .get(&op.marker())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    (op.file_id.as_ref() != held.first())
                        .then(|| format!("told file {:?}, files holds {held:?}", op.file_id))
                });
            }
            Kind::AddDocument => {
                let held = op
                    .sha256
                    .as_ref()
                    .and_then(|sha| by_sha.get(sha))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    let version = held.first()?;
                    let same = op.document_id.map(|d| d.to_string()).as_ref()
                        == Some(&version.document)
                        && op.version.map(i64::from) == Some(version.number)
                        && op.file_id.map(|f| f.to_string()).as_ref() == Some(&version.file);
                    (!same).then(|| {
                        format!(
                            "told document {:?} version {:?}, docs holds {} version {} of file {}",
                            op.document_id,
                            op.version,
                            version.document,
                            version.number,
                            version.file
                        )
                    })
                });
            }
            Kind::ChangePhase => {
                let held = by_comment
                    .get(&op.marker())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                judge(&mut findings, op, &what, held.len(), || {
                    (op.to_phase.as_ref() != held.first()).then(|| {
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

    // Sagas: each ended, and its effects agree with its outcome.
    let saga_of: HashMap<Uuid, (String, String, Option<Uuid>)> = sagas
        .into_iter()
        .map(|(file, status, step, document)| (file, (status, step, document)))
        .collect();
    let mut files_with_documents: HashSet<String> = HashSet::new();
    for (id, (file, count, numbers)) in &documents {
        files_with_documents.insert(file.clone());
        let expected: Vec<i64> = (1..=*count).collect();
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        if sorted != expected {
            findings.inconsistent.push(format!(
                "document {id} of file {file}: version_count {count}, versions {numbers:?}"
            ));
        }
        if Uuid::parse_str(file).map_or(true, |f| !files.contains_key(&f)) {
            findings.inconsistent.push(format!(
                "document {id} belongs to file {file}, which files does not hold"
            ));
        }
    }
    for (file, (status, _)) in &files {
        let saga = saga_of.get(file);
        if status == "pending" {
            findings.stuck.push(format!(
                "file {file} still pending (saga {:?})",
                saga.map(|s| (&s.0, &s.1))
            ));
        }
        if let Some((saga_status, step, _)) = saga {
            if saga_status == "running" || saga_status == "compensating" {
                findings
                    .stuck
                    .push(format!("saga of file {file} still {saga_status} at {step}"));
            }
        }
        let process = processes.get(file);
        match status.as_str() {
            "active" | "finished" => {
                if process.is_none() {
                    findings
                        .inconsistent
                        .push(format!("file {file} is {status} but bpm has no process"));
                }
                if let Some((_, _, Some(document))) = saga {
                    let held = documents.get(&document.to_string());
                    if held.is_none_or(|(f, _, _)| *f != file.to_string()) {
                        findings.inconsistent.push(format!(
                            "file {file} is {status} but its first document {document} is not in docs"
                        ));
                    }
                }
            }
            "failed" => {
                if process.is_some() {
                    findings
                        .inconsistent
                        .push(format!("file {file} failed but bpm kept its process"));
                }
                if files_with_documents.contains(&file.to_string()) {
                    findings
                        .inconsistent
                        .push(format!("file {file} failed but docs kept documents of it"));
                }
            }
            _ => {}
        }
    }
    for file in processes.keys() {
        if !files.contains_key(file) {
            findings.inconsistent.push(format!(
                "bpm has a process for file {file}, which files does not hold"
            ));
        }
    }

    // Outboxes: everything written was published.
    for (name, pool) in [
        ("files", &stores.files),
        ("bpm", &stores.bpm),
        ("auth", &stores.auth),
    ] {
        let unsent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
                .fetch_one(pool)
                .await
                .with_context(|| format!("read {name}'s outbox"))?;
        if unsent > 0 {
            findings
                .stuck
                .push(format!("{name}'s outbox holds {unsent} unsent messages"));
        }
    }
    let unsent = stores
        .docs
        .collection::<BsonDocument>("messaging_outbox")
        .count_documents(doc! {"sent_at": Bson::Null})
        .await
        .context("read docs' outbox")?;
    if unsent > 0 {
        findings
            .stuck
            .push(format!("docs' outbox holds {unsent} unsent messages"));
    }

    // The index: every file as files, bpm and docs hold it.
    let indexed: HashMap<Uuid, (Option<i64>, Option<String>, Value)> =
        sqlx::query_as::<_, (Uuid, Option<i64>, Option<String>, sqlx::types::Json<Value>)>(
            "SELECT id, version, status, document FROM index_files",
        )
        .fetch_all(&stores.index)
        .await
        .context("read the index")?
        .into_iter()
        .map(|(id, version, status, document)| (id, (version, status, document.0)))
        .collect();
    let mut documents_of: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for (id, (file, count, _)) in &documents {
        documents_of
            .entry(file.clone())
            .or_default()
            .push((id.clone(), *count));
    }
    for (file, (status, version)) in &files {
        let Some((indexed_version, indexed_status, document)) = indexed.get(file) else {
            findings
                .index
                .push(format!("file {file} is not in the index"));
            continue;
        };
        if *indexed_version != Some(*version) || indexed_status.as_ref() != Some(status) {
            findings.index.push(format!(
                "file {file}: files has {status} v{version}, the index {indexed_status:?} v{indexed_version:?}"
            ));
        }
        let process = &document["process"];
        match (processes.get(file), process.is_null()) {
            (Some(version), false) => {
                let (phase, visits) = current_phase.get(file).cloned().unwrap_or_default();
                let shown = (
                    process["process_version"].as_i64(),
                    process["phase"]["key"].as_str().unwrap_or_default(),
                    process["history"].as_array().map_or(0, Vec::len),
                );
                if shown != (Some(*version), phase.as_str(), visits) {
                    findings.index.push(format!(
                        "file {file}: bpm has v{version} in {phase} after {visits} visits, the index {shown:?}"
                    ));
                }
            }
            (Some(version), true) => findings.index.push(format!(
                "file {file}: bpm has process v{version}, the index none"
            )),
            (None, false) => findings.index.push(format!(
                "file {file}: the index shows a process bpm does not have"
            )),
            (None, true) => {}
        }
        let mut held = documents_of
            .get(&file.to_string())
            .cloned()
            .unwrap_or_default();
        held.sort();
        let mut shown: Vec<(String, i64)> = document["documents"]
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
                "file {file}: docs holds {held:?}, the index shows {shown:?}"
            ));
        }
    }
    Ok(findings)
}

/// The lost/duplicated verdict of one operation whose change is held
/// `held` times; `mismatch` says whether the one held differs from what
/// the client was told.
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
