//! Development only: seeds demo case files through the gateway's public
//! API, as the demo users clerk and validator would by hand. Every file is
//! opened with its first document through the create-file saga, gets its
//! second document, and is moved along the standard procedure to the phase
//! it is shown in (see [`plan::DEMO_FILES`]): the list then has files in
//! every phase, one that went round the rejection loop and finished ones.
//!
//! The files have fixed codes (`DEMO-001`…), so a second run finds them
//! and changes nothing; a run cut short is completed by the next one, which
//! takes up each file where its process stands.
#![forbid(unsafe_code)]

pub mod content;
pub mod gateway;
pub mod plan;

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use uuid::Uuid;

use gateway::{Gateway, Opened, Session};
use plan::{Actor, DemoFile, CODE_PREFIX, DEMO_FILES, FINISHED, PROCEDURE};

/// How long a file's saga may take to make it active.
const SAGA_WAIT: Duration = Duration::from_secs(90);

/// How long the index may take to show what was seeded.
const INDEX_WAIT: Duration = Duration::from_secs(90);

/// How often a state that takes time is read again.
const POLL: Duration = Duration::from_millis(300);

/// How many demo files are seeded at the same time (the gateway limits
/// each client's rate).
const CONCURRENCY: usize = 4;

/// A demo user's username and password.
#[derive(Debug, Clone)]
pub struct Login {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// The demo users the seeder acts as.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// A user with the clerk role: opens files and moves them.
    pub clerk: Login,
    /// A user with the validator role: rejects in validation and finishes.
    pub validator: Login,
}

impl Credentials {
    /// The development defaults of `scripts/run`: `clerk` /
    /// `clerk-dev-only` and `validator` / `validator-dev-only`, the demo
    /// users auth creates with `AUTH_DEMO_USERS=true` (refused in
    /// production).
    pub fn development() -> Self {
        Self {
            clerk: Login {
                username: "clerk".into(),
                password: "clerk-dev-only".into(),
            },
            validator: Login {
                username: "validator".into(),
                password: "validator-dev-only".into(),
            },
        }
    }
}

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Nothing answered at the gateway's address.
    #[error("the gateway at {url} cannot be reached ({what}): {reason}")]
    Unreachable {
        /// The gateway's address.
        url: String,
        /// The call that failed.
        what: String,
        /// Why, as the HTTP client tells it.
        reason: String,
    },
    /// A demo user could not sign in.
    #[error("signing in as {username} failed: {detail} (are the demo users there? auth creates them with AUTH_DEMO_USERS=true in development)")]
    SignIn {
        /// Who.
        username: String,
        /// The status and the problem's detail.
        detail: String,
    },
    /// A call answered something else than it should have.
    #[error("{what} was refused: HTTP {status}: {detail}")]
    Refused {
        /// The call.
        what: String,
        /// Its status.
        status: u16,
        /// The problem's detail.
        detail: String,
    },
    /// A demo file's saga failed, now or in an earlier run (its code is
    /// taken, so it cannot be opened again).
    #[error("demo file {code} failed: {reason}; its code is taken, so it cannot be created again (start from empty databases)")]
    FileFailed {
        /// Its code.
        code: String,
        /// The saga's failure reason.
        reason: String,
    },
    /// Something did not happen in time.
    #[error("gave up after {seconds} s waiting for {what}")]
    TimedOut {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// An answer the seeder does not understand.
    #[error("unexpected answer to {what}: {detail}")]
    Unexpected {
        /// The call.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// What happened to one demo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// Its code.
    pub code: String,
    /// Its id.
    pub id: Uuid,
    /// Whether this run opened it.
    pub created: bool,
    /// Documents this run added after its first one.
    pub documents_added: usize,
    /// Transitions this run took.
    pub moves: usize,
    /// The phase it is in.
    pub phase: String,
    /// Why it was left as it was found, when it had been changed by hand.
    pub left_as_is: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One outcome per demo file, in code order.
    pub files: Vec<FileOutcome>,
}

impl Report {
    /// How many files this run opened.
    pub fn created(&self) -> usize {
        self.files.iter().filter(|f| f.created).count()
    }

    /// Whether this run changed nothing: the demo data was already there.
    pub fn already_present(&self) -> bool {
        self.files
            .iter()
            .all(|f| !f.created && f.documents_added == 0 && f.moves == 0)
    }

    /// One line for people: `demo data loaded: …` or `demo data already
    /// present: …`.
    pub fn summary(&self) -> String {
        let mut phases: Vec<(&str, usize)> = Vec::new();
        for file in &self.files {
            match phases.iter_mut().find(|(p, _)| *p == file.phase) {
                Some((_, n)) => *n += 1,
                None => phases.push((&file.phase, 1)),
            }
        }
        let spread = plan::PHASES
            .iter()
            .filter_map(|phase| phases.iter().find(|(p, _)| p == phase))
            .map(|(p, n)| format!("{n} {p}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.already_present() {
            format!(
                "demo data already present: {} files {CODE_PREFIX}* ({spread})",
                self.files.len()
            )
        } else {
            format!(
                "demo data loaded: {} files {CODE_PREFIX}* ({spread}); {} created, {} documents added, {} transitions taken in this run",
                self.files.len(),
                self.created(),
                self.files.iter().map(|f| f.documents_added).sum::<usize>(),
                self.files.iter().map(|f| f.moves).sum::<usize>(),
            )
        }
    }
}

/// The two signed-in demo users.
struct Team {
    clerk: Session,
    validator: Session,
}

impl Team {
    fn session(&self, actor: Actor) -> &Session {
        match actor {
            Actor::Clerk => &self.clerk,
            Actor::Validator => &self.validator,
        }
    }
}

/// Seeds the demo files through the gateway at `base_url`, signing in with
/// `credentials`, and waits until the index shows them as seeded. Running
/// it again changes nothing ([`Report::already_present`]).
pub async fn seed(base_url: &str, credentials: &Credentials) -> Result<Report, SeedError> {
    let gateway = Gateway::new(base_url)?;
    let team = Team {
        clerk: gateway
            .sign_in(&credentials.clerk.username, &credentials.clerk.password)
            .await?,
        validator: gateway
            .sign_in(
                &credentials.validator.username,
                &credentials.validator.password,
            )
            .await?,
    };
    let options = gateway.initial_options(&team.clerk).await?;
    if options.is_empty() {
        return Err(SeedError::Unexpected {
            what: "reading the initial options".into(),
            detail: "files has no initial options configured".into(),
        });
    }
    let known = demo_files_in_index(&gateway, &team.clerk, CODE_PREFIX).await?;

    let mut files: Vec<FileOutcome> = stream::iter(DEMO_FILES.iter())
        .map(|file| {
            let known = known.get(file.code).copied();
            let (gateway, team, options) = (&gateway, &team, &options);
            async move { seed_file(gateway, team, options, file, known).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    files.sort_by(|a, b| a.code.cmp(&b.code));
    wait_for_index(&gateway, &team.clerk, &files).await?;
    Ok(Report { files })
}

/// The demo files the index knows among those whose code starts with
/// `prefix` (a demo file's whole code, or [`CODE_PREFIX`] for all), by code.
async fn demo_files_in_index(
    gateway: &Gateway,
    session: &Session,
    prefix: &str,
) -> Result<HashMap<String, Uuid>, SeedError> {
    Ok(gateway
        .search_index(session, prefix)
        .await?
        .iter()
        .filter_map(|item| {
            let code = item["code"].as_str()?;
            let id = Uuid::parse_str(item["id"].as_str()?).ok()?;
            DEMO_FILES
                .iter()
                .any(|f| f.code == code)
                .then(|| (code.to_owned(), id))
        })
        .collect())
}

/// The initial option `wanted` if files offers it, else the one at the
/// same place in the demo's list of the default options, else the first.
fn initial_option<'a>(options: &'a [String], wanted: &str) -> &'a str {
    if let Some(found) = options.iter().find(|o| o.as_str() == wanted) {
        return found;
    }
    let at = DEMO_FILES
        .iter()
        .map(|f| f.initial_option)
        .fold(Vec::<&str>::new(), |mut seen, o| {
            if !seen.contains(&o) {
                seen.push(o);
            }
            seen
        })
        .iter()
        .position(|o| *o == wanted)
        .unwrap_or(0);
    &options[at % options.len()]
}

/// Brings one demo file to its place: opens it if it is not there, waits
/// for its saga, adds its second document and takes the moves its process
/// has not taken yet.
async fn seed_file(
    gateway: &Gateway,
    team: &Team,
    options: &[String],
    file: &DemoFile,
    known: Option<Uuid>,
) -> Result<FileOutcome, SeedError> {
    let opener = team.session(file.opened_by);
    let (id, created) = match known {
        Some(id) => (id, false),
        None => open(gateway, opener, options, file).await?,
    };
    let status = wait_for_saga(gateway, opener, file, id).await?;
    let mut outcome = FileOutcome {
        code: file.code.to_owned(),
        id,
        created,
        documents_added: 0,
        moves: 0,
        phase: String::new(),
        left_as_is: None,
    };
    let mut process = gateway.process(opener, id).await?;
    let done = process.moves.len();
    let planned: Vec<&str> = file.moves.iter().map(|m| m.to).collect();
    let on_plan = done <= planned.len()
        && process
            .moves
            .iter()
            .zip(&planned)
            .all(|(taken, planned)| taken == planned);
    if !on_plan {
        outcome.phase = process.phase;
        outcome.left_as_is = Some(format!(
            "its process was moved by hand ({})",
            process.moves.join(" → ")
        ));
        return Ok(outcome);
    }
    let mut missing_document = match &file.second_document {
        Some(later) if status != FINISHED => {
            let names = gateway.document_names(opener, id).await?;
            (!names.iter().any(|n| n == later.document.name)).then_some(later)
        }
        _ => None,
    };
    let mut at = done;
    loop {
        if let Some(later) = missing_document.filter(|l| l.after_moves <= at) {
            let made = content::generate(&later.document.content, plan::FOOTER);
            gateway
                .add_document(
                    opener,
                    id,
                    later.document.name,
                    made.media_type,
                    &made.bytes,
                )
                .await?;
            outcome.documents_added += 1;
            missing_document = None;
        }
        let Some(step) = file.moves.get(at) else {
            break;
        };
        process = gateway
            .transition(
                team.session(step.by),
                id,
                process.version,
                step.to,
                step.comment,
            )
            .await?;
        outcome.moves += 1;
        at += 1;
    }
    outcome.phase = process.phase;
    Ok(outcome)
}

/// Stages the first document and asks for the file; when its code is
/// taken (the index had not shown it yet), finds it in the index.
async fn open(
    gateway: &Gateway,
    opener: &Session,
    options: &[String],
    file: &DemoFile,
) -> Result<(Uuid, bool), SeedError> {
    let made = content::generate(&file.first_document.content, plan::FOOTER);
    let upload = gateway
        .stage_upload(
            opener,
            file.first_document.name,
            made.media_type,
            &made.bytes,
        )
        .await?;
    match gateway
        .open_file(
            opener,
            file.code,
            initial_option(options, file.initial_option),
            file.description,
            PROCEDURE,
            upload,
        )
        .await?
    {
        Opened::Accepted(id) => Ok((id, true)),
        Opened::CodeTaken => {
            let id = poll(
                INDEX_WAIT,
                &format!("the index to show {}", file.code),
                || async {
                    Ok(demo_files_in_index(gateway, opener, file.code)
                        .await?
                        .get(file.code)
                        .copied())
                },
            )
            .await?;
            Ok((id, false))
        }
    }
}

/// Waits until the saga of file `id` ended and returns its status
/// (`active` or `finished`); `FileFailed` if it failed.
async fn wait_for_saga(
    gateway: &Gateway,
    session: &Session,
    file: &DemoFile,
    id: Uuid,
) -> Result<String, SeedError> {
    let found: Value = poll(
        SAGA_WAIT,
        &format!("the saga of {} to end", file.code),
        || async {
            let found = gateway.file(session, id).await?;
            Ok((found["status"] != "pending").then_some(found))
        },
    )
    .await?;
    match found["status"].as_str() {
        Some(status @ ("active" | "finished")) => Ok(status.to_owned()),
        Some("failed") => Err(SeedError::FileFailed {
            code: file.code.to_owned(),
            reason: found["failure_reason"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned(),
        }),
        other => Err(SeedError::Unexpected {
            what: format!("reading file {}", file.code),
            detail: format!("unknown status {other:?}"),
        }),
    }
}

/// Waits until the index lists every seeded file in its status and phase,
/// with all its documents, so that the list screen shows what was seeded.
async fn wait_for_index(
    gateway: &Gateway,
    session: &Session,
    files: &[FileOutcome],
) -> Result<(), SeedError> {
    poll(INDEX_WAIT, "the index to show the demo files", || async {
        let items = gateway.search_index(session, CODE_PREFIX).await?;
        for outcome in files.iter().filter(|o| o.left_as_is.is_none()) {
            let Some(file) = DEMO_FILES.iter().find(|f| f.code == outcome.code) else {
                continue;
            };
            let status = if file.finishes() { FINISHED } else { "active" };
            let listed = items.iter().any(|item| {
                item["code"] == file.code
                    && item["status"] == status
                    && item["phase"]["key"] == outcome.phase.as_str()
            });
            if !listed {
                return Ok(None);
            }
        }
        // Documents reach the index on their own topic: wait for those of
        // the files this run touched.
        for outcome in files.iter().filter(|o| {
            o.left_as_is.is_none() && (o.created || o.documents_added > 0 || o.moves > 0)
        }) {
            let Some(file) = DEMO_FILES.iter().find(|f| f.code == outcome.code) else {
                continue;
            };
            let Some(detail) = gateway.indexed_file(session, outcome.id).await? else {
                return Ok(None);
            };
            if detail["documents"].as_array().map_or(0, Vec::len) < file.documents().count() {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

/// Runs `check` every [`POLL`] until it gives a value, for at most `limit`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T, SeedError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, SeedError>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SeedError::TimedOut {
                what: what.to_owned(),
                seconds: limit.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_initial_option_is_used_as_is_and_an_unknown_one_maps_by_position() {
        let defaults = vec![
            "Sede electrónica".to_owned(),
            "A petición departamento".to_owned(),
        ];
        assert_eq!(
            initial_option(&defaults, "A petición departamento"),
            "A petición departamento"
        );
        let renamed = vec!["Registro electrónico".to_owned(), "De oficio".to_owned()];
        assert_eq!(
            initial_option(&renamed, "Sede electrónica"),
            "Registro electrónico"
        );
        assert_eq!(
            initial_option(&renamed, "A petición departamento"),
            "De oficio"
        );
        let single = vec!["Presencial".to_owned()];
        assert_eq!(
            initial_option(&single, "A petición departamento"),
            "Presencial"
        );
    }

    fn outcome(code: &str, phase: &str) -> FileOutcome {
        FileOutcome {
            code: code.into(),
            id: Uuid::nil(),
            created: false,
            documents_added: 0,
            moves: 0,
            phase: phase.into(),
            left_as_is: None,
        }
    }

    #[test]
    fn a_run_that_changed_nothing_reports_the_demo_data_already_present() {
        let mut report = Report {
            files: vec![
                outcome("DEMO-001", "initial"),
                outcome("DEMO-002", "finished"),
            ],
        };
        assert!(report.already_present());
        assert_eq!(
            report.summary(),
            "demo data already present: 2 files DEMO-* (1 initial, 1 finished)"
        );
        report.files[1].moves = 3;
        assert!(!report.already_present());
        assert!(
            report.summary().starts_with("demo data loaded: 2 files"),
            "{}",
            report.summary()
        );
    }
}
