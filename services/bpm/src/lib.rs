//! The bpm service: procedure definitions, the process of each file, its
//! phase history and deadlines.
#![forbid(unsafe_code)]

pub mod domain;
