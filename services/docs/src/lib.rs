//! The docs service: documents of case files, their versions and content,
//! staged uploads, and the saga commands that attach and remove them.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod startup;

pub use startup::{Application, Settings};
