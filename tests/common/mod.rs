//! The test kit shared by the integration tests (`mod common;` in each): a tar writer that
//! controls every byte, the one seeded PRNG, compression and digest helpers, an apply sandbox,
//! tree snapshots, and the one policy for tests that need root (`require_root!()`).
//!
//! Each test crate compiles its own copy and uses only part of it, so unused items are not
//! dead code here.
#![allow(dead_code, unused_macros, unused_imports)]

pub mod breakouts;
pub mod compress;
pub mod overlay;
pub mod rng;
pub mod root;
pub mod sandbox;
pub mod tar;
pub mod tree;

pub(crate) use root::require_root;
