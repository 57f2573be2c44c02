//! The bpm service (being built under issue 7).
#![forbid(unsafe_code)]
