//! The docs service (being built under issue 7).
#![forbid(unsafe_code)]
