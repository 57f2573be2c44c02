//! Use cases of the bpm service and the ports they need.

mod ports;
mod use_cases;

pub use ports::{
    AddHolidayError, DeadlineStore, DefinitionStore, HolidayStore, ProcessStore, SaveError,
};
pub use use_cases::{
    moment, BpmService, ChangeError, ExtendCommand, GetDefinitionError, GetProcessError,
    MigrateCommand, ProcessView, PublishError, RemoveHolidayError, TransitionCommand,
};
