//! Domain rules, given/when/then, on pure code.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use tramita_identity::Role;
use uuid::Uuid;

use super::calendar::{self, DurationUnit, Holidays, MaxDuration};
use super::*;

fn moment(day: u32) -> Moment {
    // November 2026: the 2nd is a Monday.
    let today = NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
    let at: DateTime<Utc> = Utc.from_utc_datetime(&today.and_hms_opt(9, 0, 0).unwrap());
    Moment { at, today }
}

fn actor(id: &str) -> Actor {
    Actor {
        id: id.into(),
        name: Some(format!("{id}, Name")),
    }
}

fn key(raw: &str) -> Key {
    Key::parse(raw).unwrap()
}

fn standard() -> Definition {
    standard_definition(moment(2).at)
}

fn started() -> Process {
    Process::start(
        Uuid::now_v7(),
        &standard(),
        actor("clerk-1"),
        moment(2),
        &Holidays::default(),
    )
    .0
}

fn pointers(problems: &[DefinitionProblem]) -> Vec<&str> {
    problems.iter().map(|p| p.pointer.as_str()).collect()
}

fn draft() -> DefinitionDraft {
    standard_draft()
}

// ---- definitions ----

#[test]
fn given_the_standard_procedure_then_it_is_valid_with_the_reference_names() {
    let definition = standard();
    assert_eq!(definition.key.as_str(), "standard");
    assert_eq!(definition.version, 1);
    let names: Vec<&str> = definition
        .phases
        .iter()
        .map(|p| p.names.es.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Fase inicial",
            "Fase de análisis técnico",
            "Fase de validación",
            "Fase rechazado",
            "Finalizado"
        ]
    );
    assert_eq!(definition.initial_phase().key.as_str(), "initial");
    let into_finished: Vec<_> = definition
        .transitions
        .iter()
        .filter(|t| t.to.as_str() == "finished")
        .collect();
    assert_eq!(into_finished.len(), 1);
    assert_eq!(into_finished[0].roles, [Role::Validator]);
}

#[test]
fn given_a_draft_with_no_initial_phase_then_it_is_refused() {
    let mut d = draft();
    d.phases.as_mut().unwrap()[0].initial = false;
    let problems = d.validate().unwrap_err();
    assert!(pointers(&problems).contains(&"/phases"), "{problems:?}");
    assert!(problems.iter().any(|p| p.message.contains("initial; none")));
}

#[test]
fn given_two_initial_phases_then_the_second_is_named() {
    let mut d = draft();
    d.phases.as_mut().unwrap()[1].initial = true;
    let problems = d.validate().unwrap_err();
    assert_eq!(pointers(&problems), ["/phases/1/initial"]);
}

#[test]
fn given_an_unreachable_phase_then_it_is_named() {
    let mut d = draft();
    // Nothing enters "rejected" any more; it still leaves to "initial".
    d.transitions
        .as_mut()
        .unwrap()
        .retain(|t| t.to.as_deref() != Some("rejected"));
    let problems = d.validate().unwrap_err();
    assert_eq!(pointers(&problems), ["/phases/3"], "{problems:?}");
    assert!(problems[0].message.contains("cannot be reached"));
}

#[test]
fn given_a_transition_leaving_a_terminal_phase_then_it_is_refused() {
    let mut d = draft();
    d.transitions.as_mut().unwrap().push(TransitionDraft {
        from: Some("finished".into()),
        to: Some("initial".into()),
        roles: Some(vec!["admin".into()]),
    });
    let problems = d.validate().unwrap_err();
    assert_eq!(pointers(&problems), ["/transitions/6/from"]);
    assert!(problems[0].message.contains("terminal"));
}

#[test]
fn given_a_non_terminal_phase_without_a_way_out_then_it_is_refused() {
    let mut d = draft();
    d.transitions
        .as_mut()
        .unwrap()
        .retain(|t| t.from.as_deref() != Some("rejected"));
    let problems = d.validate().unwrap_err();
    assert_eq!(pointers(&problems), ["/phases/3"], "{problems:?}");
    assert!(problems[0].message.contains("not terminal"));
}

#[test]
fn given_unknown_or_repeated_roles_then_each_is_named() {
    let mut d = draft();
    d.transitions.as_mut().unwrap()[0].roles =
        Some(vec!["clerk".into(), "superuser".into(), "clerk".into()]);
    d.transitions.as_mut().unwrap()[1].roles = Some(vec![]);
    let problems = d.validate().unwrap_err();
    assert_eq!(
        pointers(&problems),
        [
            "/transitions/0/roles/1",
            "/transitions/0/roles/2",
            "/transitions/1/roles"
        ]
    );
}

#[test]
fn given_duplicate_keys_then_each_duplicate_is_named() {
    let mut d = draft();
    d.phases.as_mut().unwrap()[2].key = Some("technical_analysis".into());
    d.transitions.as_mut().unwrap().push(TransitionDraft {
        from: Some("initial".into()),
        to: Some("technical_analysis".into()),
        roles: Some(vec!["clerk".into()]),
    });
    let problems = d.validate().unwrap_err();
    let at = pointers(&problems);
    assert!(at.contains(&"/phases/2/key"), "{problems:?}");
    assert!(at.contains(&"/transitions/6"), "{problems:?}");
}

#[test]
fn given_a_draft_with_many_problems_then_all_are_reported_together() {
    let d = DefinitionDraft {
        key: Some("Bad Key".into()),
        name_es: Some("Nombre\0".into()),
        name_en: None,
        phases: Some(vec![
            PhaseDraft {
                key: Some("a".into()),
                name_es: Some("A".into()),
                name_en: Some("A".into()),
                initial: true,
                terminal: true,
                max_duration: Some((Some("weeks".into()), Some(3))),
            },
            PhaseDraft {
                key: Some("b".into()),
                name_es: Some("B".into()),
                name_en: Some("B".into()),
                initial: false,
                terminal: false,
                max_duration: Some((Some("months".into()), Some(121))),
            },
        ]),
        transitions: Some(vec![TransitionDraft {
            from: Some("a".into()),
            to: Some("zzz".into()),
            roles: Some(vec!["clerk".into()]),
        }]),
    };
    let problems = d.validate().unwrap_err();
    assert_eq!(
        pointers(&problems),
        [
            "/key",
            "/names/es",
            "/names/en",
            "/phases/0/max_duration/unit",
            "/phases/0/terminal",
            "/phases/1/max_duration/amount",
            "/transitions/0/to",
            "/phases/1",
            "/phases/1",
        ],
        "{problems:#?}"
    );
}

#[test]
fn given_an_empty_body_then_every_required_part_is_named() {
    let problems = DefinitionDraft::default().validate().unwrap_err();
    assert_eq!(
        pointers(&problems),
        ["/key", "/names/es", "/names/en", "/phases", "/transitions"]
    );
}

#[test]
fn given_a_terminal_phase_with_a_duration_or_a_self_loop_then_they_are_refused() {
    let mut d = draft();
    d.phases.as_mut().unwrap()[4].max_duration = Some((Some("calendar_days".into()), Some(3)));
    d.transitions.as_mut().unwrap().push(TransitionDraft {
        from: Some("validation".into()),
        to: Some("validation".into()),
        roles: Some(vec!["validator".into()]),
    });
    let problems = d.validate().unwrap_err();
    assert_eq!(
        pointers(&problems),
        ["/phases/4/max_duration", "/transitions/6/to"]
    );
}

#[test]
fn a_valid_definition_round_trips_through_its_draft() {
    let definition = standard();
    let again = definition
        .to_draft()
        .validate()
        .unwrap()
        .publish(1, None, definition.published_at);
    assert_eq!(again, definition);
}

// ---- transitions and roles ----

#[test]
fn given_a_new_process_then_it_is_in_the_initial_phase_with_a_due_date() {
    let (process, event) = Process::start(
        Uuid::now_v7(),
        &standard(),
        actor("clerk-1"),
        moment(2),
        &Holidays::default(),
    );
    assert_eq!(process.current().phase.key.as_str(), "initial");
    assert_eq!(process.current().phase.names.es.as_str(), "Fase inicial");
    assert_eq!(process.status, ProcessStatus::Running);
    assert_eq!(process.version, 1);
    // 10 business days from Monday 2 November 2026.
    assert_eq!(
        process.current().due_date,
        Some(calendar::due_date(
            moment(2).today,
            MaxDuration::BusinessDays(10),
            &Holidays::default()
        ))
    );
    assert_eq!(event.message_type(), "bpm.ProcessStarted.v1");
    assert_eq!(event.actor.unwrap().id, "clerk-1");
}

#[test]
fn given_a_clerk_when_moving_along_an_allowed_transition_then_the_phase_changes() {
    let mut process = started();
    let events = process
        .transition(
            &standard(),
            &key("technical_analysis"),
            &[Role::Clerk],
            actor("clerk-1"),
            Comment::parse("Documentación completa").unwrap(),
            moment(3),
            &Holidays::default(),
        )
        .unwrap();
    assert_eq!(process.current().phase.key.as_str(), "technical_analysis");
    assert_eq!(process.version, 2);
    assert_eq!(events.len(), 1);
    let ProcessEventKind::PhaseChanged { from, comment } = &events[0].kind else {
        panic!("{events:?}")
    };
    assert_eq!(from.names.es.as_str(), "Fase inicial");
    assert_eq!(comment.as_ref().unwrap().as_str(), "Documentación completa");
    assert_eq!(
        events[0].phase.names.en.as_str(),
        "Technical analysis phase"
    );
}

#[test]
fn given_a_clerk_at_validation_when_finishing_then_it_is_forbidden() {
    let mut process = started();
    let d = standard();
    let h = Holidays::default();
    for to in ["technical_analysis", "validation"] {
        process
            .transition(
                &d,
                &key(to),
                &[Role::Clerk],
                actor("c"),
                None,
                moment(3),
                &h,
            )
            .unwrap();
    }
    let err = process
        .transition(
            &d,
            &key("finished"),
            &[Role::Clerk],
            actor("c"),
            None,
            moment(4),
            &h,
        )
        .unwrap_err();
    assert!(
        matches!(err, TransitionError::NotAllowed { ref roles, .. } if roles == &["validator"])
    );
    assert_eq!(process.version, 3, "nothing changed");
    assert_eq!(
        process
            .available_transitions(&d, &[Role::Clerk])
            .iter()
            .map(|(p, _)| p.key.as_str())
            .collect::<Vec<_>>(),
        ["rejected"]
    );
    assert_eq!(
        process.available_transitions(&d, &[Role::Validator]).len(),
        2
    );
    assert!(process
        .available_transitions(&d, &[Role::Reader])
        .is_empty());
}

#[test]
fn given_a_phase_not_reachable_from_the_current_one_then_there_is_no_such_transition() {
    let mut process = started();
    let err = process
        .transition(
            &standard(),
            &key("validation"),
            &[Role::Validator],
            actor("v"),
            None,
            moment(3),
            &Holidays::default(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        TransitionError::NoSuchTransition {
            from: "initial".into(),
            to: "validation".into()
        }
    );
    let err = process
        .transition(
            &standard(),
            &key("nowhere"),
            &[Role::Validator],
            actor("v"),
            None,
            moment(3),
            &Holidays::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TransitionError::NoSuchTransition { .. }));
}

#[test]
fn given_the_rejection_loop_then_the_history_keeps_one_row_per_visit() {
    let d = standard();
    let h = Holidays::default();
    let mut process = started();
    let steps = [
        ("technical_analysis", Role::Clerk, "clerk-1", 3),
        ("rejected", Role::Clerk, "clerk-1", 4),
        ("initial", Role::Clerk, "clerk-2", 5),
        ("technical_analysis", Role::Clerk, "clerk-2", 9),
        ("validation", Role::Validator, "validator-1", 10),
        ("finished", Role::Validator, "validator-1", 11),
    ];
    let mut last_events = Vec::new();
    for (to, role, who, day) in steps {
        last_events = process
            .transition(&d, &key(to), &[role], actor(who), None, moment(day), &h)
            .unwrap();
    }
    type Row<'a> = (&'a str, u32, Option<u32>, &'a str, Option<&'a str>);
    let rows: Vec<Row<'_>> = process
        .history
        .iter()
        .map(|v| {
            (
                v.phase.names.es.as_str(),
                chrono::Datelike::day(&v.entered_at),
                v.left_at.map(|l| chrono::Datelike::day(&l)),
                v.entered_by.id.as_str(),
                v.left_by.as_ref().map(|a| a.id.as_str()),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("Fase inicial", 2, Some(3), "clerk-1", Some("clerk-1")),
            (
                "Fase de análisis técnico",
                3,
                Some(4),
                "clerk-1",
                Some("clerk-1")
            ),
            ("Fase rechazado", 4, Some(5), "clerk-1", Some("clerk-2")),
            ("Fase inicial", 5, Some(9), "clerk-2", Some("clerk-2")),
            (
                "Fase de análisis técnico",
                9,
                Some(10),
                "clerk-2",
                Some("validator-1")
            ),
            (
                "Fase de validación",
                10,
                Some(11),
                "validator-1",
                Some("validator-1")
            ),
            ("Finalizado", 11, None, "validator-1", None),
        ]
    );
    let seqs: Vec<i32> = process.history.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(process.status, ProcessStatus::Finished);
    assert_eq!(process.finished_by.as_ref().unwrap().id, "validator-1");
    assert_eq!(
        process.current().due_date,
        None,
        "a terminal phase has no deadline"
    );
    let types: Vec<&str> = last_events.iter().map(|e| e.message_type()).collect();
    assert_eq!(types, ["bpm.PhaseChanged.v1", "bpm.ProcessFinished.v1"]);
    let err = process
        .transition(
            &d,
            &key("rejected"),
            &[Role::Validator],
            actor("v"),
            None,
            moment(12),
            &h,
        )
        .unwrap_err();
    assert_eq!(err, TransitionError::Finished);
}

// ---- deadlines: suspension and extension ----

fn reason(text: &str) -> Reason {
    Reason::parse(text).unwrap()
}

#[test]
fn given_a_suspension_when_resumed_then_the_suspended_days_do_not_count() {
    let d = standard();
    let h = Holidays::new([NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()]);
    let mut process = Process::start(Uuid::now_v7(), &d, actor("c"), moment(2), &h).0;
    let due = process.current().due_date.unwrap();

    let event = process
        .suspend(actor("c"), reason("Requerimiento al interesado"), moment(4))
        .unwrap();
    assert_eq!(event.message_type(), "bpm.ProcessSuspended.v1");
    assert!(process.is_suspended());
    assert_eq!(
        process.suspend(actor("c"), reason("otra"), moment(5)),
        Err(SuspendError::AlreadySuspended)
    );
    let err = process
        .transition(
            &d,
            &key("technical_analysis"),
            &[Role::Clerk],
            actor("c"),
            None,
            moment(5),
            &h,
        )
        .unwrap_err();
    assert_eq!(err, TransitionError::Suspended);
    assert!(process.available_transitions(&d, &[Role::Clerk]).is_empty());

    let event = process
        .resume(&d, actor("v"), None, moment(11), &h)
        .unwrap();
    let expected = calendar::resumed_due_date(
        due,
        DurationUnit::BusinessDays,
        moment(4).today,
        moment(11).today,
        &h,
    );
    assert_eq!(process.current().due_date, Some(expected));
    assert!(expected > due, "the due date moved later");
    assert_eq!(event.due_date, Some(expected));
    let ProcessEventKind::Resumed {
        previous_due_date, ..
    } = event.kind
    else {
        panic!()
    };
    assert_eq!(previous_due_date, Some(due));
    let suspension = &process.current().suspensions[0];
    assert_eq!(suspension.resumed_by.as_ref().unwrap().id, "v");
    assert_eq!(
        process.resume(&d, actor("v"), None, moment(12), &h),
        Err(ResumeError::NotSuspended)
    );
    assert_eq!(process.version, 3);
}

#[test]
fn given_a_deadline_when_extended_then_it_moves_once_only() {
    let d = standard();
    let h = Holidays::default();
    let mut process = started();
    let due = process.current().due_date.unwrap();
    let extra = MaxDuration::BusinessDays(5);
    let event = process
        .extend(
            actor("v"),
            reason("Informe pendiente"),
            extra,
            moment(3),
            &h,
        )
        .unwrap();
    let extended = calendar::extended_due_date(due, extra, &h);
    assert_eq!(process.current().due_date, Some(extended));
    assert_eq!(event.message_type(), "bpm.DeadlineExtended.v1");
    assert_eq!(
        process.extend(actor("v"), reason("otra vez"), extra, moment(4), &h),
        Err(ExtendError::AlreadyExtended("initial".into()))
    );
    // The next phase has its own deadline, which may be extended once too.
    process
        .transition(
            &d,
            &key("technical_analysis"),
            &[Role::Clerk],
            actor("c"),
            None,
            moment(4),
            &h,
        )
        .unwrap();
    assert!(process
        .extend(actor("v"), reason("Informe"), extra, moment(5), &h)
        .is_ok());
}

#[test]
fn given_a_phase_without_deadline_then_it_cannot_be_extended() {
    let mut d = standard();
    d.phases[0].max_duration = None;
    let mut process = Process::start(
        Uuid::now_v7(),
        &d,
        actor("c"),
        moment(2),
        &Holidays::default(),
    )
    .0;
    assert_eq!(process.current().due_date, None);
    assert_eq!(
        process.extend(
            actor("v"),
            reason("x"),
            MaxDuration::CalendarDays(3),
            moment(3),
            &Holidays::default()
        ),
        Err(ExtendError::NoDeadline("initial".into()))
    );
}

#[test]
fn deadline_alerts_come_once_each_and_overdue_wins() {
    let due = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let none = AlertsSent::default();
    assert_eq!(deadline_alert(due, day(10), 3, none), None);
    assert_eq!(
        deadline_alert(due, day(17), 3, none),
        Some(DeadlineAlert::DueSoon)
    );
    assert_eq!(
        deadline_alert(
            due,
            day(18),
            3,
            AlertsSent {
                due_soon: true,
                overdue: false
            }
        ),
        None
    );
    assert_eq!(
        deadline_alert(
            due,
            day(20),
            3,
            AlertsSent {
                due_soon: true,
                overdue: false
            }
        ),
        None
    );
    assert_eq!(
        deadline_alert(
            due,
            day(21),
            3,
            AlertsSent {
                due_soon: true,
                overdue: false
            }
        ),
        Some(DeadlineAlert::Overdue)
    );
    assert_eq!(
        deadline_alert(due, day(25), 3, none),
        Some(DeadlineAlert::Overdue)
    );
    assert_eq!(
        deadline_alert(
            due,
            day(25),
            3,
            AlertsSent {
                due_soon: false,
                overdue: true
            }
        ),
        None
    );
}

// ---- migration ----

fn version_two(without: Option<&str>) -> Definition {
    let mut d = standard_draft();
    if let Some(gone) = without {
        d.phases
            .as_mut()
            .unwrap()
            .retain(|p| p.key.as_deref() != Some(gone));
        d.transitions
            .as_mut()
            .unwrap()
            .retain(|t| t.from.as_deref() != Some(gone) && t.to.as_deref() != Some(gone));
        d.transitions.as_mut().unwrap().push(TransitionDraft {
            from: Some("validation".into()),
            to: Some("initial".into()),
            roles: Some(vec!["clerk".into(), "validator".into()]),
        });
    }
    d.phases.as_mut().unwrap()[1].name_es = Some("Fase de análisis".into());
    d.validate()
        .unwrap()
        .publish(2, Some(actor("admin")), moment(5).at)
}

#[test]
fn given_a_newer_version_with_the_current_phase_then_the_process_moves_and_keeps_its_deadline() {
    let d = standard();
    let h = Holidays::default();
    let mut process = started();
    process
        .transition(
            &d,
            &key("technical_analysis"),
            &[Role::Clerk],
            actor("c"),
            None,
            moment(3),
            &h,
        )
        .unwrap();
    let due = process.current().due_date;
    process
        .suspend(actor("c"), reason("espera"), moment(4))
        .unwrap();
    let v2 = version_two(None);
    let event = process
        .migrate(
            &v2,
            actor("admin"),
            Comment::parse("Nueva versión").unwrap(),
            moment(6),
        )
        .unwrap();
    assert_eq!(event.message_type(), "bpm.ProcessMigrated.v1");
    assert_eq!(process.definition_version, 2);
    assert_eq!(process.history.len(), 3);
    let previous = &process.history[1];
    assert_eq!(previous.left_by.as_ref().unwrap().id, "admin");
    assert!(
        previous.suspensions.is_empty(),
        "the open suspension moved on"
    );
    let current = process.current();
    assert_eq!(current.entry, EntryKind::Migration);
    assert_eq!(current.definition_version, 2);
    assert_eq!(current.phase.names.es.as_str(), "Fase de análisis");
    assert_eq!(current.due_date, due);
    assert!(process.is_suspended(), "the clock stays stopped");
    assert_eq!(
        process.migrate(&v2, actor("admin"), None, moment(7)),
        Err(MigrateError::NotNewer {
            current: 2,
            requested: 2
        })
    );
}

#[test]
fn given_a_newer_version_without_the_current_phase_then_migration_is_refused_naming_it() {
    let d = standard();
    let h = Holidays::default();
    let mut process = started();
    for to in ["technical_analysis", "rejected"] {
        process
            .transition(
                &d,
                &key(to),
                &[Role::Clerk],
                actor("c"),
                None,
                moment(3),
                &h,
            )
            .unwrap();
    }
    let before = process.clone();
    let err = process
        .migrate(
            &version_two(Some("rejected")),
            actor("admin"),
            None,
            moment(6),
        )
        .unwrap_err();
    assert_eq!(
        err,
        MigrateError::PhaseMissing {
            phase: "rejected".into(),
            version: 2
        }
    );
    assert!(err.to_string().contains("\"rejected\""));
    assert_eq!(process, before, "nothing changed");
}
