//! The standard procedure of DOMAIN.md, installed as `standard` version 1.

use chrono::{DateTime, Utc};

use super::calendar::{DurationUnit, MaxDuration};
use super::definition::{Definition, DefinitionDraft, PhaseDraft, TransitionDraft};

/// Key of the standard procedure.
pub const STANDARD_KEY: &str = "standard";

fn phase(
    key: &str,
    es: &str,
    en: &str,
    initial: bool,
    terminal: bool,
    business_days: Option<u32>,
) -> PhaseDraft {
    PhaseDraft {
        key: Some(key.into()),
        name_es: Some(es.into()),
        name_en: Some(en.into()),
        initial,
        terminal,
        max_duration: business_days.map(|days| {
            let duration = MaxDuration::new(DurationUnit::BusinessDays, days)
                .expect("the standard durations are in range");
            (
                Some("business_days".to_owned()),
                Some(i64::from(duration.amount())),
            )
        }),
    }
}

fn transition(from: &str, to: &str, roles: &[&str]) -> TransitionDraft {
    TransitionDraft {
        from: Some(from.into()),
        to: Some(to.into()),
        roles: Some(roles.iter().map(|r| (*r).to_owned()).collect()),
    }
}

/// The standard procedure as a draft:
///
/// ```text
/// initial ──> technical_analysis ──> validation ──> finished
///                    │                    │
///                    └───> rejected <─────┘
///                             │
///                             └──> initial
/// ```
/// Clerks and validators take every transition but the one into
/// `finished`, which only a validator takes. Maximum durations, in business
/// days: initial 10, technical analysis 10, validation 5, rejected 10 (the
/// term Ley 39/2015 art. 68 gives an applicant to put a request right).
pub fn standard_draft() -> DefinitionDraft {
    const BOTH: &[&str] = &["clerk", "validator"];
    DefinitionDraft {
        key: Some(STANDARD_KEY.into()),
        name_es: Some("Procedimiento estándar".into()),
        name_en: Some("Standard procedure".into()),
        phases: Some(vec![
            phase(
                "initial",
                "Fase inicial",
                "Initial phase",
                true,
                false,
                Some(10),
            ),
            phase(
                "technical_analysis",
                "Fase de análisis técnico",
                "Technical analysis phase",
                false,
                false,
                Some(10),
            ),
            phase(
                "validation",
                "Fase de validación",
                "Validation phase",
                false,
                false,
                Some(5),
            ),
            phase(
                "rejected",
                "Fase rechazado",
                "Rejected phase",
                false,
                false,
                Some(10),
            ),
            phase("finished", "Finalizado", "Finished", false, true, None),
        ]),
        transitions: Some(vec![
            transition("initial", "technical_analysis", BOTH),
            transition("technical_analysis", "validation", BOTH),
            transition("technical_analysis", "rejected", BOTH),
            transition("validation", "finished", &["validator"]),
            transition("validation", "rejected", BOTH),
            transition("rejected", "initial", BOTH),
        ]),
    }
}

/// The standard procedure, version 1, installed by the service at `now`.
pub fn standard_definition(now: DateTime<Utc>) -> Definition {
    standard_draft()
        .validate()
        .expect("the standard procedure is a valid definition")
        .publish(1, None, now)
}
