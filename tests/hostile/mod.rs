//! The hostile-layer test's own parts (only `apply_hostile.rs` includes them): the trap-filled
//! sandbox it applies into and the seeded generator of layers aimed at it.

pub mod generator;
pub mod sandbox;
