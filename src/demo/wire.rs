//! The customer link's messages as the ATM reads and writes them: a
//! request is checked the way the original's Python protobuf checks it
//! (every `required` field present, a known request type) before it
//! becomes a [`session::Event`](super::session::Event), and a
//! [`Decision`] becomes the wire's [`Reply`].
//!
//! prost decodes a proto2 `required` field without noting whether it was
//! on the wire (a missing one reads as its default), so an empty frame
//! would pass for "deposit 0 into the account named `""`". [`WireRequest`]
//! reads the same bytes with every field optional, which shows what was
//! actually sent; Python's `ParseFromString` refuses such a request, and
//! so does the ATM.

use super::session::{Decision, Event, Kind};
use crate::proto::customer::{Reply, Request, RequestType};

/// `customer.Request` read with every field optional, to see which were
/// on the wire. Same tags and wire types as [`Request`]: any bytes that
/// decode as one decode as the other.
///
/// ```
/// use prost::Message;
/// use protoloop::demo::session::{Event, Kind};
/// use protoloop::demo::wire::WireRequest;
///
/// // Jane Doe withdraws 100, as the original Python customer sends it.
/// let bytes = b"\x0a\x08Jane Doe\x10\x02\x1d\x00\x00\xc8\x42";
/// let event = WireRequest::decode(&bytes[..]).unwrap().into_event();
/// assert_eq!(
///     event,
///     Event::Request { customer_id: "Jane Doe".into(), kind: Kind::Withdraw, amount: 100.0 }
/// );
///
/// // An empty frame is not a request.
/// let event = WireRequest::decode(&b""[..]).unwrap().into_event();
/// assert!(matches!(event, Event::Malformed(why) if why.contains("customer_id")));
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireRequest {
    /// Field 1, `customer_id`.
    #[prost(string, optional, tag = "1")]
    pub customer_id: Option<String>,
    /// Field 2, `request_type` (an enum is a varint on the wire).
    #[prost(int32, optional, tag = "2")]
    pub request_type: Option<i32>,
    /// Field 3, `amount`.
    #[prost(float, optional, tag = "3")]
    pub amount: Option<f32>,
}

impl WireRequest {
    /// The session event this request is: a [`Event::Request`], or
    /// [`Event::Malformed`] naming the missing fields or the unknown
    /// request type.
    pub fn into_event(self) -> Event {
        let missing: Vec<&str> = [
            ("customer_id", self.customer_id.is_none()),
            ("request_type", self.request_type.is_none()),
            ("amount", self.amount.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        let (Some(customer_id), Some(request_type), Some(amount)) =
            (self.customer_id, self.request_type, self.amount)
        else {
            return Event::Malformed(format!(
                "expected a customer.Request with every required field, got one without {}",
                missing.join(", ")
            ));
        };
        let kind = match RequestType::try_from(request_type) {
            Ok(RequestType::Deposit) => Kind::Deposit,
            Ok(RequestType::Withdraw) => Kind::Withdraw,
            Err(_) => {
                return Event::Malformed(format!(
                    "expected request_type DEPOSIT (1) or WITHDRAW (2), got {request_type}"
                ));
            }
        };
        Event::Request {
            customer_id,
            kind,
            amount,
        }
    }
}

/// The wire's request for `kind` of `amount` on `customer_id`'s account.
///
/// ```
/// use protoloop::demo::session::Kind;
/// use protoloop::demo::wire::request;
/// let r = request(Kind::Withdraw, "Jane Doe", 100.0);
/// assert_eq!(r.request_type, 2);
/// ```
pub fn request(kind: Kind, customer_id: &str, amount: f32) -> Request {
    let request_type = match kind {
        Kind::Deposit => RequestType::Deposit,
        Kind::Withdraw => RequestType::Withdraw,
    };
    Request {
        customer_id: customer_id.to_string(),
        request_type: request_type as i32,
        amount,
    }
}

/// The wire's reply for a decision.
pub fn reply(decision: Decision) -> Reply {
    Reply {
        success: decision.success,
        balance: decision.balance,
    }
}

/// A reply as the `customer` program prints it: `success=true balance=400`.
///
/// ```
/// use protoloop::demo::wire::describe;
/// use protoloop::proto::customer::Reply;
/// assert_eq!(describe(&Reply { success: false, balance: 0.5 }), "success=false balance=0.5");
/// ```
pub fn describe(reply: &Reply) -> String {
    format!("success={} balance={}", reply.success, reply.balance)
}

/// A request type as the programs take it on the command line:
/// `deposit` or `withdraw`.
///
/// ```
/// use protoloop::demo::session::Kind;
/// use protoloop::demo::wire::parse_kind;
/// assert_eq!(parse_kind("withdraw"), Ok(Kind::Withdraw));
/// assert!(parse_kind("borrow").unwrap_err().contains("borrow"));
/// ```
pub fn parse_kind(word: &str) -> Result<Kind, String> {
    match word {
        "deposit" => Ok(Kind::Deposit),
        "withdraw" => Ok(Kind::Withdraw),
        other => Err(format!("expected `deposit` or `withdraw`, got `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::customer::Reply;

    fn event(bytes: &[u8]) -> Event {
        WireRequest::decode(bytes).unwrap().into_event()
    }

    #[test]
    fn reads_every_request_the_generated_type_writes() {
        for (kind, name, amount) in [
            (Kind::Deposit, "Jane Doe", 0.0),
            (Kind::Withdraw, "", 100.5),
            (Kind::Withdraw, "Zoë", -3.0),
        ] {
            let bytes = request(kind, name, amount).encode_to_vec();
            assert_eq!(
                event(&bytes),
                Event::Request {
                    customer_id: name.into(),
                    kind,
                    amount
                }
            );
        }
    }

    #[test]
    fn names_every_missing_field() {
        // The generated type always writes all three fields; this one need not.
        let bytes = WireRequest {
            customer_id: Some("x".into()),
            ..Default::default()
        }
        .encode_to_vec();
        match event(&bytes) {
            Event::Malformed(why) => {
                assert!(why.ends_with("without request_type, amount"), "{why}")
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        match event(b"") {
            Event::Malformed(why) => assert!(
                why.ends_with("without customer_id, request_type, amount"),
                "{why}"
            ),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn refuses_an_unknown_request_type() {
        let mut r = request(Kind::Deposit, "Jane Doe", 1.0);
        r.request_type = 3;
        match event(&r.encode_to_vec()) {
            Event::Malformed(why) => assert!(why.contains("got 3"), "{why}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn bytes_that_are_not_protobuf_do_not_decode() {
        // Field 1 says 100 bytes follow; 1 does.
        assert!(WireRequest::decode(&b"\x0a\x64x"[..]).is_err());
    }

    #[test]
    fn the_replies_bytes_match_the_original() {
        let success = reply(Decision {
            success: true,
            balance: 0.0,
        });
        assert_eq!(success.encode_to_vec(), b"\x08\x01\x15\x00\x00\x00\x00");
        assert_eq!(describe(&success), "success=true balance=0");
        let r = Reply {
            success: true,
            balance: 400.0,
        };
        assert_eq!(describe(&r), "success=true balance=400");
    }
}
