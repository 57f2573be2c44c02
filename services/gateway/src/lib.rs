//! The gateway service (work in progress).
