//! The auth service (work in progress).
