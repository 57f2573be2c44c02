//! Holidays: the non-business days admins keep besides weekends.

use chrono::{DateTime, NaiveDate, Utc};

use super::values::{Actor, Name};

/// A holiday of the administration's calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holiday {
    /// The day.
    pub date: NaiveDate,
    /// What it is ("Día de la Constitución").
    pub name: Name,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Who added it.
    pub created_by: Actor,
}
