//! The bpm service: procedure definitions, the process of each file, its
//! phase history and deadlines.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod startup;

pub use startup::{Application, Settings};
