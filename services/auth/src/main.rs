//! Entry point of the auth service.
fn main() {}
