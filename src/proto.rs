//! The protobuf messages of the demos, generated from the schemas in
//! `proto/` by `build.rs` (prost-build, with the pure-Rust `protox`
//! compiler: no `protoc` needed).
//!
//! The ATM demo's schemas ([`bank`], [`customer`]) and the adder's
//! ([`adder`]) are proto2 with every field `required`. prost encodes a
//! required field whether or not it holds its default, so `false`, `0` and
//! `""` are on the wire too, byte for byte as the demo's Python does:
//!
//! ```
//! use prost::Message;
//! use protoloop::proto::customer::Reply;
//!
//! let reply = Reply { success: false, balance: 0.0 };
//! assert_eq!(reply.encode_to_vec(), [0x08, 0x00, 0x15, 0x00, 0x00, 0x00, 0x00]);
//! ```
//!
//! Each message also implements [`prost::Name`], whose full name
//! (`"customer.Reply"`) appears in decode errors, and
//! [`Required`](crate::codec::Required), listing its required fields: a
//! frame without one of them is refused when decoded, as protobuf does.

// Generated code: the schemas' comments become docs where present, but not
// every field has one.
#![allow(missing_docs)]

/// `proto/bank.proto`: the ATM-to-bank link ([`GetBalance`](bank::GetBalance)
/// in, [`Response`](bank::Response) out).
pub mod bank {
    include!(concat!(env!("OUT_DIR"), "/bank.rs"));
}

/// `proto/customer.proto`: the customer-to-ATM link
/// ([`Request`](customer::Request) in, [`Reply`](customer::Reply) out).
pub mod customer {
    include!(concat!(env!("OUT_DIR"), "/customer.rs"));
}

/// `proto/adder.proto`: the talk's first demo, two integers in, their sum
/// out.
pub mod adder {
    include!(concat!(env!("OUT_DIR"), "/adder.rs"));
}

/// `proto/rpc.proto`: the request-id [`Envelope`](rpc::Envelope) of
/// [`crate::rpc`]'s out-of-order mode.
pub mod rpc {
    include!(concat!(env!("OUT_DIR"), "/rpc.rs"));
}

// `impl Required` for each message above with required fields, and the
// `TypeId` lookup the codec uses (see `build.rs`).
include!(concat!(env!("OUT_DIR"), "/required.rs"));
