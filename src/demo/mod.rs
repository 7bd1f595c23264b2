//! The ATM/bank demo from the talk "A Really Gentle Introduction to
//! Asyncio" (PyCon AU 2017), rebuilt on protoloop: the library side of the
//! `atm`, `bank` and `customer` programs and of `tests/atm.rs`.
//!
//! It is also a worked example of the layering the crate recommends: the
//! session logic ([`session`]) is a plain state machine, tested without
//! sockets; the network shell around it is thin.

pub mod session;
