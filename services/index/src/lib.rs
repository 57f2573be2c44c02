//! The index service: the CQRS read side of case files.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod startup;

pub use startup::{prepare_rebuild, Application, Settings, DEFAULT_TIME_ZONE};
