//! Entry point of the docs service: wiring only.

fn main() {}
