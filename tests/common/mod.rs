//! The test kit shared by the integration tests (`mod common;` in each): the one seeded PRNG,
//! and compression and digest helpers.
//!
//! Each test crate compiles its own copy and uses only part of it, so unused items are not
//! dead code here.
#![allow(dead_code)]

pub mod compress;
pub mod rng;
