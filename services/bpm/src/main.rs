//! Entry point of the bpm service: wiring only.

fn main() {}
