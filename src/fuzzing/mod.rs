//! What the fuzz targets in `fuzz/` reach: a few internals, and checks of
//! the codec and request/reply layers against reference models. Each check
//! takes a plain case and panics on a breach; the fuzz targets build cases
//! from fuzzer bytes and the property tests ([`props`]) from proptest
//! strategies, so both exercise the same rules.
//!
//! Compiled with the `fuzzing` feature and in the crate's own tests only;
//! not part of the API.

pub mod frames;
pub mod messages;
pub mod rpc;

#[cfg(test)]
mod props;

pub use crate::transport::buffer::{Flow, WriteBuffer};
