//! The `evident` binary: argument parsing and wiring only.

fn main() {}
