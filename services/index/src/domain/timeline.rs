//! The timeline of a file: every event applied to it, with a short summary
//! in Spanish.
//!
//! Its order is the events' own: by the time they happened, ties broken by
//! the message id (a UUIDv7). A file's events come from four topics whose
//! interleaving differs between the live run and a rebuild's replay, so an
//! order of arrival would not come out the same twice; this one does.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::facts::{DocumentFact, FileEventKind, FileFact, ProcessFact, ProcessKind};
use super::values::{shorten, Actor};

/// Longest piece of free text (a reason, a name) quoted in a summary.
const QUOTED: usize = 120;

/// One row of a file's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// The file.
    pub file_id: Uuid,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The message that told it.
    pub message_id: Uuid,
    /// Its versioned type.
    pub message_type: String,
    /// Who did it (the display name auth gives the id is looked up when
    /// read; the name the event carried is the fallback).
    pub actor: Option<Actor>,
    /// What happened, in a few words.
    pub summary: String,
}

fn date(day: NaiveDate) -> String {
    day.format("%d/%m/%Y").to_string()
}

fn quoted(text: &str) -> String {
    shorten(text, QUOTED)
}

/// A short Spanish summary of `fact`.
pub fn summary(fact: &FileFact) -> String {
    match fact {
        FileFact::File { kind, snapshot } => match kind {
            FileEventKind::Created => format!("Expediente {} creado", snapshot.code),
            FileEventKind::Updated => "Expediente modificado".to_owned(),
            FileEventKind::Activated => "Expediente activo".to_owned(),
            FileEventKind::Failed {
                reason: Some(reason),
            } => {
                format!("Expediente fallido: {}", quoted(reason))
            }
            FileEventKind::Failed { reason: None } => "Expediente fallido".to_owned(),
            FileEventKind::Finished => "Expediente finalizado".to_owned(),
            FileEventKind::Other(name) => format!("Expediente: {name}"),
        },
        FileFact::Process(process) => process_summary(process),
        FileFact::Document(DocumentFact::Snapshot {
            added: true,
            document,
        }) => format!("Documento «{}» añadido", quoted(&document.name)),
        FileFact::Document(DocumentFact::Snapshot { document, .. }) => format!(
            "Nueva versión {} del documento «{}»",
            document.version,
            quoted(&document.name)
        ),
        FileFact::Document(DocumentFact::Removed { name, .. }) => {
            format!("Documento «{}» eliminado", quoted(name))
        }
    }
}

fn process_summary(fact: &ProcessFact) -> String {
    let phase = &fact.phase.names.es;
    let due = fact.due_date.map(date);
    match &fact.kind {
        ProcessKind::Started => format!("Tramitación iniciada en {phase}"),
        ProcessKind::PhaseChanged { from, .. } => format!("{} → {phase}", from.names.es),
        ProcessKind::Suspended {
            reason: Some(reason),
        } => {
            format!("Plazo suspendido: {}", quoted(reason))
        }
        ProcessKind::Suspended { reason: None } => "Plazo suspendido".to_owned(),
        ProcessKind::Resumed { .. } => match due {
            Some(due) => format!("Plazo reanudado; vence el {due}"),
            None => "Plazo reanudado".to_owned(),
        },
        ProcessKind::DeadlineExtended { .. } => match due {
            Some(due) => format!("Plazo ampliado hasta el {due}"),
            None => "Plazo ampliado".to_owned(),
        },
        ProcessKind::DueSoon => match due {
            Some(due) => format!("{phase} vence el {due}"),
            None => format!("{phase} vence pronto"),
        },
        ProcessKind::Overdue => match due {
            Some(due) => format!("{phase} vencida el {due}"),
            None => format!("{phase} vencida"),
        },
        ProcessKind::Migrated { from_version, .. } => format!(
            "Procedimiento actualizado de la versión {from_version} a la {}",
            fact.procedure_version
        ),
        ProcessKind::Finished => format!("Tramitación finalizada en {phase}"),
        ProcessKind::Cancelled => "Tramitación cancelada".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::{Names, PhaseRef};
    use chrono::TimeZone;

    fn fact(kind: ProcessKind, due: Option<&str>) -> FileFact {
        FileFact::Process(ProcessFact {
            kind,
            procedure_key: "standard".into(),
            procedure_version: 1,
            process_version: Some(2),
            phase: PhaseRef {
                key: "validation".into(),
                names: Names {
                    es: "Fase de validación".into(),
                    en: "Validation phase".into(),
                },
            },
            due_date: due.map(|d| d.parse().unwrap()),
            actor: None,
            at: Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
        })
    }

    #[test]
    fn summaries_say_what_happened_in_spanish() {
        assert_eq!(
            summary(&fact(
                ProcessKind::Suspended {
                    reason: Some("Requerimiento al interesado".into())
                },
                None
            )),
            "Plazo suspendido: Requerimiento al interesado"
        );
        assert_eq!(
            summary(&fact(
                ProcessKind::DeadlineExtended { reason: None },
                Some("2026-04-01")
            )),
            "Plazo ampliado hasta el 01/04/2026"
        );
        assert_eq!(
            summary(&fact(ProcessKind::DueSoon, Some("2026-04-01"))),
            "Fase de validación vence el 01/04/2026"
        );
        assert_eq!(
            summary(&fact(ProcessKind::Finished, None)),
            "Tramitación finalizada en Fase de validación"
        );
        let long = "x".repeat(500);
        let text = summary(&fact(ProcessKind::Suspended { reason: Some(long) }, None));
        assert!(text.chars().count() < 150, "quoted text is shortened");
    }
}
