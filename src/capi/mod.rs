//! The extern "C" layer: thin shims over the core. All `unsafe` of the crate lives here.
