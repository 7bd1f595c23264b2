//! Tests of the `protoloop::testing` toolkit itself: the in-memory pair,
//! the lifecycle checker, and the split-point helpers.

mod lifecycle;
mod memory;
mod memory_faults;
#[path = "../peer/mod.rs"]
mod peer;
mod props;
mod split;

pub use peer::{Peer, is_peer_reset, payload};
