//! The ATM/bank demo from the talk "A Really Gentle Introduction to
//! Asyncio" (PyCon AU 2017), rebuilt on protoloop: the library side of the
//! `atm`, `bank` and `customer` programs and of `tests/atm.rs`.
//!
//! It is also a worked example of the layering the crate recommends: the
//! session logic ([`session`]) and the wire checks ([`wire`]) are plain
//! code, tested without sockets; the network shell around them
//! ([`atm`]) is thin.
//!
//! | module | what |
//! |---|---|
//! | [`session`] | one customer's session as a state machine |
//! | [`wire`] | the customer link's messages: request checks, replies |
//! | [`atm`] | the ATM server: bank link, customer listener, shutdown |
//! | [`bank`] | the bank: balances answered in request order |
//! | [`customer`] | a customer whose `send` returns a future of the reply |
//! | [`child`] | the `atm` program as a child process (demo and tests) |
//! | [`tour`] | the whole demo in one call (`atm demo`) |
//! | [`cli`] | the command line the `atm` and `bank` programs share |

pub mod atm;
pub mod bank;
pub mod child;
pub mod cli;
pub mod customer;
pub mod session;
mod teller;
#[cfg(test)]
mod teller_splits;
pub mod tour;
pub mod wire;
