//! Tests of the `protoloop::testing` toolkit itself: the in-memory pair,
//! the lifecycle checker, and the split-point helpers.

#[path = "../peer/mod.rs"]
mod peer;
mod lifecycle;
mod memory;
mod split;

pub use peer::{Peer, is_peer_reset, payload};
