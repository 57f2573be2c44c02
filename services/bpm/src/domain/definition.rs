//! Procedure definitions: phases and transitions as data, versioned, and
//! the rules a definition must keep to be published.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use tramita_identity::Role;

use super::calendar::{DurationUnit, MaxDuration};
use super::values::{Actor, Key, LocalizedName, Name, ValueError};

/// Most phases a definition may have.
pub const MAX_PHASES: usize = 50;
/// Most transitions a definition may have.
pub const MAX_TRANSITIONS: usize = 200;

/// A definition as submitted, before validation: every field may be absent
/// or wrong, and each problem is reported with where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefinitionDraft {
    /// Key shared by every version.
    pub key: Option<String>,
    /// Spanish name.
    pub name_es: Option<String>,
    /// English name.
    pub name_en: Option<String>,
    /// Phases, in display order.
    pub phases: Option<Vec<PhaseDraft>>,
    /// Transitions.
    pub transitions: Option<Vec<TransitionDraft>>,
}

/// A phase as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseDraft {
    /// Key, unique in the definition.
    pub key: Option<String>,
    /// Spanish name.
    pub name_es: Option<String>,
    /// English name.
    pub name_en: Option<String>,
    /// Whether processes start here.
    pub initial: bool,
    /// Whether entering it finishes the process.
    pub terminal: bool,
    /// Maximum duration: unit name and amount.
    pub max_duration: Option<(Option<String>, Option<i64>)>,
}

/// A transition as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionDraft {
    /// Key of the phase it leaves.
    pub from: Option<String>,
    /// Key of the phase it enters.
    pub to: Option<String>,
    /// Names of the roles allowed to take it.
    pub roles: Option<Vec<String>>,
}

/// One thing wrong with a draft: a JSON pointer (RFC 6901) into the
/// submitted body and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionProblem {
    /// Where, e.g. `/phases/2/key` (`` for the whole body).
    pub pointer: String,
    /// What, in words a user can act on.
    pub message: String,
}

/// A phase of a valid definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Unique key.
    pub key: Key,
    /// Display names.
    pub names: LocalizedName,
    /// Processes start here (exactly one phase is initial).
    pub initial: bool,
    /// Entering it finishes the process; no transition leaves it.
    pub terminal: bool,
    /// How long a visit may last; gives the visit its due date.
    pub max_duration: Option<MaxDuration>,
}

/// A transition of a valid definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The phase it leaves.
    pub from: Key,
    /// The phase it enters.
    pub to: Key,
    /// Who may take it (any of them).
    pub roles: Vec<Role>,
}

impl Transition {
    /// Whether any of `roles` may take it.
    pub fn allows(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }
}

/// A published version of a procedure definition: valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Key shared by every version.
    pub key: Key,
    /// 1, 2, ... per key.
    pub version: i32,
    /// Display names.
    pub names: LocalizedName,
    /// Phases in display order.
    pub phases: Vec<Phase>,
    /// Transitions.
    pub transitions: Vec<Transition>,
    /// When it was published.
    pub published_at: DateTime<Utc>,
    /// Who published it (`None`: installed by the service).
    pub published_by: Option<Actor>,
}

/// A draft that passed validation, waiting for its version number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidDefinition {
    key: Key,
    names: LocalizedName,
    phases: Vec<Phase>,
    transitions: Vec<Transition>,
}

impl ValidDefinition {
    /// The definition's key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Publishes it as `version`.
    pub fn publish(
        self,
        version: i32,
        published_by: Option<Actor>,
        published_at: DateTime<Utc>,
    ) -> Definition {
        Definition {
            key: self.key,
            version,
            names: self.names,
            phases: self.phases,
            transitions: self.transitions,
            published_at,
            published_by,
        }
    }
}

#[derive(Default)]
struct Problems(Vec<DefinitionProblem>);

impl Problems {
    fn push(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.0.push(DefinitionProblem {
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    fn required<T>(
        &mut self,
        pointer: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        match raw.map(parse) {
            None => {
                self.push(pointer, "is required");
                None
            }
            Some(Ok(value)) => Some(value),
            Some(Err(error)) => {
                self.push(pointer, error.0);
                None
            }
        }
    }

    fn names(&mut self, at: &str, es: Option<&str>, en: Option<&str>) -> Option<LocalizedName> {
        let es = self.required(&format!("{at}/names/es"), es, Name::parse);
        let en = self.required(&format!("{at}/names/en"), en, Name::parse);
        Some(LocalizedName { es: es?, en: en? })
    }

    fn duration(
        &mut self,
        at: &str,
        draft: &Option<(Option<String>, Option<i64>)>,
    ) -> Option<Option<MaxDuration>> {
        let Some((unit, amount)) = draft else {
            return Some(None);
        };
        match parse_max_duration(unit.as_deref(), *amount) {
            Ok(duration) => Some(Some(duration)),
            Err(problems) => {
                for (field, message) in problems {
                    self.push(format!("{at}/{field}"), message);
                }
                None
            }
        }
    }
}

/// Parses a maximum duration from its unit name (`calendar_days`,
/// `business_days`, `months`) and amount (1 to 3650 days, 1 to 120
/// months); on failure, each problem names its field (`unit`, `amount`).
pub fn parse_max_duration(
    unit: Option<&str>,
    amount: Option<i64>,
) -> Result<MaxDuration, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let unit = match unit {
        None => {
            problems.push(("unit", "is required".to_owned()));
            None
        }
        Some("calendar_days") => Some(DurationUnit::CalendarDays),
        Some("business_days") => Some(DurationUnit::BusinessDays),
        Some("months") => Some(DurationUnit::Months),
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            problems.push((
                "unit",
                format!("unknown unit {shown:?}; use calendar_days, business_days or months"),
            ));
            None
        }
    };
    if amount.is_none() {
        problems.push(("amount", "is required".to_owned()));
    }
    let (Some(unit), Some(amount)) = (unit, amount) else {
        return Err(problems);
    };
    u32::try_from(amount)
        .ok()
        .and_then(|amount| MaxDuration::new(unit, amount).ok())
        .ok_or_else(|| {
            let range = match unit {
                DurationUnit::Months => "1 to 120",
                _ => "1 to 3650",
            };
            vec![("amount", format!("must be {range} for {unit}"))]
        })
}

impl DefinitionDraft {
    /// Validates the draft, reporting every problem at once:
    /// - key and names (es, en) are present and well formed;
    /// - at least one and at most [`MAX_PHASES`] phases, with unique keys,
    ///   names and a valid maximum duration; a terminal phase has none;
    /// - exactly one initial phase, which is not terminal; at least one
    ///   terminal phase;
    /// - at most [`MAX_TRANSITIONS`] transitions, each between two different
    ///   known phases, with one or more known roles (none twice), no pair
    ///   twice;
    /// - terminal phases have no outgoing transition; every other phase has
    ///   one;
    /// - every phase is reachable from the initial one.
    pub fn validate(&self) -> Result<ValidDefinition, Vec<DefinitionProblem>> {
        let mut problems = Problems::default();
        let key = problems.required("/key", self.key.as_deref(), Key::parse);
        let names = problems.names("", self.name_es.as_deref(), self.name_en.as_deref());

        let phase_drafts: &[PhaseDraft] = match &self.phases {
            None => {
                problems.push("/phases", "is required");
                &[]
            }
            Some(phases) if phases.is_empty() => {
                problems.push("/phases", "must have at least one phase");
                &[]
            }
            Some(phases) if phases.len() > MAX_PHASES => {
                problems.push("/phases", format!("must have at most {MAX_PHASES} phases"));
                &[]
            }
            Some(phases) => phases,
        };

        // Each phase on its own; `None` where it is invalid.
        let mut phases: Vec<Option<Phase>> = Vec::with_capacity(phase_drafts.len());
        let mut index_of: BTreeMap<Key, usize> = BTreeMap::new();
        for (i, draft) in phase_drafts.iter().enumerate() {
            let at = format!("/phases/{i}");
            let key = problems.required(&format!("{at}/key"), draft.key.as_deref(), Key::parse);
            if let Some(key) = &key {
                if let Some(first) = index_of.get(key) {
                    problems.push(
                        format!("{at}/key"),
                        format!("duplicate phase key \"{key}\" (also at /phases/{first})"),
                    );
                } else {
                    index_of.insert(key.clone(), i);
                }
            }
            let names = problems.names(&at, draft.name_es.as_deref(), draft.name_en.as_deref());
            let duration = problems.duration(&format!("{at}/max_duration"), &draft.max_duration);
            if draft.initial && draft.terminal {
                problems.push(
                    format!("{at}/terminal"),
                    "the initial phase cannot be terminal",
                );
            }
            if draft.terminal && matches!(duration, Some(Some(_))) {
                problems.push(
                    format!("{at}/max_duration"),
                    "a terminal phase has no maximum duration",
                );
            }
            phases.push(match (key, names, duration) {
                (Some(key), Some(names), Some(max_duration)) => Some(Phase {
                    key,
                    names,
                    initial: draft.initial,
                    terminal: draft.terminal,
                    max_duration,
                }),
                _ => None,
            });
        }

        let initials: Vec<usize> = phase_drafts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.initial)
            .map(|(i, _)| i)
            .collect();
        if !phase_drafts.is_empty() {
            match initials.as_slice() {
                [] => problems.push("/phases", "exactly one phase must be initial; none is"),
                [_] => {}
                [first, rest @ ..] => {
                    for i in rest {
                        problems.push(
                            format!("/phases/{i}/initial"),
                            format!(
                                "exactly one phase must be initial; /phases/{first} already is"
                            ),
                        );
                    }
                }
            }
            if !phase_drafts.iter().any(|p| p.terminal) {
                problems.push("/phases", "at least one phase must be terminal");
            }
        }
        let terminal = |key: &Key| index_of.get(key).is_some_and(|&i| phase_drafts[i].terminal);

        let transition_drafts: &[TransitionDraft] = match &self.transitions {
            None => {
                problems.push("/transitions", "is required");
                &[]
            }
            Some(transitions) if transitions.len() > MAX_TRANSITIONS => {
                problems.push(
                    "/transitions",
                    format!("must have at most {MAX_TRANSITIONS} transitions"),
                );
                &[]
            }
            Some(transitions) => transitions,
        };
        let mut transitions: Vec<Option<Transition>> = Vec::new();
        let mut pairs: BTreeMap<(Key, Key), usize> = BTreeMap::new();
        for (i, draft) in transition_drafts.iter().enumerate() {
            let at = format!("/transitions/{i}");
            let mut phase_ref = |field: &str, raw: Option<&str>| {
                let pointer = format!("{at}/{field}");
                let key = problems.required(&pointer, raw, Key::parse)?;
                if index_of.contains_key(&key) {
                    Some(key)
                } else {
                    problems.push(pointer, format!("no phase has the key \"{key}\""));
                    None
                }
            };
            let from = phase_ref("from", draft.from.as_deref());
            let to = phase_ref("to", draft.to.as_deref());
            if let (Some(from), Some(to)) = (&from, &to) {
                if from == to {
                    problems.push(format!("{at}/to"), "must lead to another phase");
                }
                if terminal(from) {
                    problems.push(
                        format!("{at}/from"),
                        format!("\"{from}\" is terminal: no transition may leave it"),
                    );
                }
                if let Some(first) = pairs.get(&(from.clone(), to.clone())) {
                    problems.push(
                        at.clone(),
                        format!(
                            "duplicate transition from \"{from}\" to \"{to}\" (also at /transitions/{first})"
                        ),
                    );
                } else {
                    pairs.insert((from.clone(), to.clone()), i);
                }
            }
            let mut roles = Vec::new();
            let mut roles_ok = true;
            match &draft.roles {
                None => {
                    problems.push(format!("{at}/roles"), "is required");
                    roles_ok = false;
                }
                Some(names) if names.is_empty() => {
                    problems.push(format!("{at}/roles"), "must name at least one role");
                    roles_ok = false;
                }
                Some(names) => {
                    for (j, name) in names.iter().enumerate() {
                        match Role::parse(name) {
                            None => {
                                let shown: String = name.chars().take(40).collect();
                                problems.push(
                                    format!("{at}/roles/{j}"),
                                    format!(
                                        "unknown role {shown:?}; known roles: admin, clerk, validator, reader"
                                    ),
                                );
                                roles_ok = false;
                            }
                            Some(role) if roles.contains(&role) => {
                                problems.push(
                                    format!("{at}/roles/{j}"),
                                    format!("role {name:?} is listed twice"),
                                );
                                roles_ok = false;
                            }
                            Some(role) => roles.push(role),
                        }
                    }
                }
            }
            transitions.push(match (from, to, roles_ok) {
                (Some(from), Some(to), true) => Some(Transition { from, to, roles }),
                _ => None,
            });
        }

        // The graph, over the phases and transitions that are well formed.
        let edges: Vec<(&Key, &Key)> = transition_drafts
            .iter()
            .filter_map(|t| {
                let from = index_of
                    .keys()
                    .find(|k| Some(k.as_str()) == t.from.as_deref())?;
                let to = index_of
                    .keys()
                    .find(|k| Some(k.as_str()) == t.to.as_deref())?;
                Some((from, to))
            })
            .collect();
        for (key, &i) in &index_of {
            if !phase_drafts[i].terminal && !edges.iter().any(|(from, _)| *from == key) {
                problems.push(
                    format!("/phases/{i}"),
                    format!("\"{key}\" is not terminal, so a transition must leave it; none does"),
                );
            }
        }
        if let [initial] = initials.as_slice() {
            let start = index_of
                .iter()
                .find(|(_, &i)| i == *initial)
                .map(|(key, _)| key);
            if let Some(start) = start {
                let mut reached: BTreeSet<&Key> = BTreeSet::from([start]);
                let mut queue = VecDeque::from([start]);
                while let Some(at) = queue.pop_front() {
                    for (_, to) in edges.iter().filter(|(from, _)| *from == at) {
                        if reached.insert(to) {
                            queue.push_back(to);
                        }
                    }
                }
                for (key, &i) in &index_of {
                    if !reached.contains(key) {
                        problems.push(
                            format!("/phases/{i}"),
                            format!(
                                "\"{key}\" cannot be reached from the initial phase \"{start}\""
                            ),
                        );
                    }
                }
            }
        }

        if !problems.0.is_empty() {
            return Err(problems.0);
        }
        let unwrap = "every part is valid when there are no problems";
        Ok(ValidDefinition {
            key: key.expect(unwrap),
            names: names.expect(unwrap),
            phases: phases.into_iter().map(|p| p.expect(unwrap)).collect(),
            transitions: transitions.into_iter().map(|t| t.expect(unwrap)).collect(),
        })
    }
}

impl Definition {
    /// The phase with `key`.
    pub fn phase(&self, key: &Key) -> Option<&Phase> {
        self.phases.iter().find(|p| &p.key == key)
    }

    /// The phase processes start in.
    pub fn initial_phase(&self) -> &Phase {
        self.phases
            .iter()
            .find(|p| p.initial)
            .expect("a valid definition has an initial phase")
    }

    /// The transition from `from` to `to`, if the definition has one.
    pub fn transition(&self, from: &Key, to: &Key) -> Option<&Transition> {
        self.transitions
            .iter()
            .find(|t| &t.from == from && &t.to == to)
    }

    /// The transitions leaving `from` that any of `roles` may take.
    pub fn available(&self, from: &Key, roles: &[Role]) -> Vec<&Transition> {
        self.transitions
            .iter()
            .filter(|t| &t.from == from && t.allows(roles))
            .collect()
    }

    /// The draft this definition would be submitted as (to publish a copy,
    /// or to read one back from storage through the same rules).
    pub fn to_draft(&self) -> DefinitionDraft {
        DefinitionDraft {
            key: Some(self.key.as_str().to_owned()),
            name_es: Some(self.names.es.as_str().to_owned()),
            name_en: Some(self.names.en.as_str().to_owned()),
            phases: Some(
                self.phases
                    .iter()
                    .map(|p| PhaseDraft {
                        key: Some(p.key.as_str().to_owned()),
                        name_es: Some(p.names.es.as_str().to_owned()),
                        name_en: Some(p.names.en.as_str().to_owned()),
                        initial: p.initial,
                        terminal: p.terminal,
                        max_duration: p
                            .max_duration
                            .map(|d| (Some(d.unit().to_string()), Some(i64::from(d.amount())))),
                    })
                    .collect(),
            ),
            transitions: Some(
                self.transitions
                    .iter()
                    .map(|t| TransitionDraft {
                        from: Some(t.from.as_str().to_owned()),
                        to: Some(t.to.as_str().to_owned()),
                        roles: Some(t.roles.iter().map(|r| r.as_str().to_owned()).collect()),
                    })
                    .collect(),
            ),
        }
    }
}
