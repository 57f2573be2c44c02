//! Entry point of the gateway service.
fn main() {}
