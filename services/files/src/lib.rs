//! The files service: the case-file aggregate, its HTTP API and its events.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod startup;

pub use startup::{Application, SagaSettings, Settings};
