//! proto2 `required` fields: every demo message missing any of its
//! required fields is refused (by the codec, the framing adapter and the
//! request/reply layer), as protobuf's own runtimes refuse it; whole ones
//! still decode.

mod framed_support;
mod rpc_support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use framed_support::{Rig, gb, names, protocol_error, unhex, wire_of};
use prost::Message;
use protoloop::codec::{
    CodecError, Framed, MessageCodec, MessageHandler, Required, RequiredFields,
};
use protoloop::proto::adder::{AddReply, AddRequest};
use protoloop::proto::bank::{GetBalance, Response};
use protoloop::proto::customer::{Reply, Request};
use protoloop::proto::rpc::Envelope;
use protoloop::rpc::{RpcClient, RpcError, RpcOptions};
use protoloop::{CloseReason, ConnectOptions};
use rpc_support::{add, adder, addr, run, serve, until};
use tokio_util::codec::Decoder;

/// One whole message as its fields' encodings (tag order), and the
/// protobuf name and field name for each tag.
struct Case {
    message: &'static str,
    fields: &'static [(u32, &'static str, &'static str)],
}

/// Decodes a payload as one message type.
type DecodeFn = fn(&[u8]) -> Result<(), CodecError>;

/// Every demo message with a value for each field, taken from the issue's
/// byte-exact vectors where there is one.
const CASES: &[(DecodeFn, Case)] = &[
    (
        decode::<GetBalance>,
        Case {
            message: "bank.GetBalance",
            fields: &[(1, "customer_id", "0a084a616e6520446f65")],
        },
    ),
    (
        decode::<Response>,
        Case {
            message: "bank.Response",
            fields: &[
                (1, "customer_id", "0a084a616e6520446f65"),
                (2, "balance", "150000c842"),
            ],
        },
    ),
    (
        decode::<Request>,
        Case {
            message: "customer.Request",
            fields: &[
                (1, "customer_id", "0a084a616e6520446f65"),
                (2, "request_type", "1002"),
                (3, "amount", "1d0000c842"),
            ],
        },
    ),
    (
        decode::<Reply>,
        Case {
            message: "customer.Reply",
            fields: &[(1, "success", "0801"), (2, "balance", "150000c843")],
        },
    ),
    (
        decode::<AddRequest>,
        Case {
            message: "adder.AddRequest",
            fields: &[(1, "a", "0803"), (2, "b", "1004")],
        },
    ),
    (
        decode::<AddReply>,
        Case {
            message: "adder.AddReply",
            fields: &[(1, "sum", "0807")],
        },
    ),
    (
        decode::<Envelope>,
        Case {
            message: "rpc.Envelope",
            fields: &[(1, "id", "0809"), (2, "body", "12020807")],
        },
    ),
];

/// Decode `payload`, framed with the demo's 2-byte prefix, as an `M`
/// through `MessageCodec`, and through `decode_payload` the same way.
fn decode<M: Message + Default + 'static>(payload: &[u8]) -> Result<(), CodecError> {
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    wire.extend_from_slice(payload);
    let via_codec = MessageCodec::<M>::new().decode(&mut wire).map(|m| {
        assert!(m.is_some(), "a whole frame decodes to a message");
    });
    let via_payload = MessageCodec::<M>::decode_payload(Bytes::copy_from_slice(payload)).map(drop);
    assert_eq!(
        format!("{via_codec:?}"),
        format!("{via_payload:?}"),
        "both decoding paths agree"
    );
    via_codec
}

fn payload_without(case: &Case, skip: Option<u32>) -> Vec<u8> {
    case.fields
        .iter()
        .filter(|(tag, _, _)| Some(*tag) != skip)
        .flat_map(|(_, _, hex)| unhex(hex))
        .collect()
}

#[test]
fn every_demo_message_missing_each_required_field_is_refused() {
    for (decode, case) in CASES {
        for &(tag, field, _) in case.fields {
            let payload = payload_without(case, Some(tag));
            match decode(&payload) {
                Err(CodecError::MissingRequired {
                    message,
                    field: f,
                    tag: t,
                }) => {
                    assert_eq!((message, f, t), (case.message, field, tag));
                }
                other => panic!(
                    "{} without {field}: expected refused, got {other:?}",
                    case.message
                ),
            }
        }
        // Nothing at all: the first required field is named.
        let (tag, field, _) = case.fields[0];
        assert!(
            matches!(decode(&[]), Err(CodecError::MissingRequired { tag: t, field: f, .. }) if t == tag && f == field),
            "{} empty",
            case.message
        );
    }
}

#[test]
fn whole_demo_messages_decode_in_any_field_order_and_with_extras() {
    for (decode, case) in CASES {
        decode(&payload_without(case, None)).unwrap();
        // Fields reversed, one repeated, and an unknown field 15 (string).
        let mut payload: Vec<u8> = case
            .fields
            .iter()
            .rev()
            .flat_map(|(_, _, hex)| unhex(hex))
            .collect();
        payload.extend_from_slice(&unhex(case.fields[0].2));
        payload.extend_from_slice(&unhex("7a03616263"));
        decode(&payload).unwrap();
    }
}

#[test]
fn the_error_names_the_message_and_the_field() {
    let err = MessageCodec::<Reply>::decode_payload(Bytes::from_static(&[0x08, 0x01])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing required field: expected a customer.Reply with field 2 (balance), got one without it"
    );
}

#[test]
fn generated_impls_list_the_schema_fields() {
    assert_eq!(GetBalance::REQUIRED.fields(), &[(1, "customer_id")]);
    assert_eq!(
        Request::REQUIRED.fields(),
        &[(1, "customer_id"), (2, "request_type"), (3, "amount")]
    );
    assert_eq!(Envelope::REQUIRED.message(), "rpc.Envelope");
    assert_eq!(RequiredFields::of::<AddReply>(), Some(AddReply::REQUIRED));
    assert_eq!(RequiredFields::of::<u32>(), None);
}

/// A message that is not generated by this crate: unchecked unless its
/// required fields are given.
#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(int32, required, tag = "1")]
    seq: i32,
}

#[test]
fn other_messages_are_checked_only_when_asked() {
    let mut plain = MessageCodec::<Ping>::new();
    assert_eq!(plain.required_fields(), None);
    let mut wire = BytesMut::from(&[0u8, 0][..]);
    assert_eq!(plain.decode(&mut wire).unwrap(), Some(Ping { seq: 0 }));

    let mut checked =
        MessageCodec::<Ping>::new().required(Some(RequiredFields::new("demo.Ping", &[(1, "seq")])));
    let mut wire = BytesMut::from(&[0u8, 0, 0, 2, 0x08, 0x05][..]);
    assert!(matches!(
        checked.decode(&mut wire),
        Err(CodecError::MissingRequired {
            message: "demo.Ping",
            tag: 1,
            ..
        })
    ));
    // The frame was consumed; the next one decodes.
    assert_eq!(checked.decode(&mut wire).unwrap(), Some(Ping { seq: 5 }));

    // And a generated message's check can be turned off.
    let mut off = MessageCodec::<GetBalance>::new().required(None);
    let mut wire = BytesMut::from(&[0u8, 0][..]);
    assert_eq!(off.decode(&mut wire).unwrap(), Some(gb("")));
}

#[test]
fn framed_closes_on_a_frame_missing_a_field_after_delivering_earlier_ones() {
    let rig = Rig::new(|_| {});
    let mut wire = wire_of(names(2));
    wire.extend_from_slice(&unhex("0000")); // a GetBalance without customer_id
    wire.extend_from_slice(&wire_of(names(1))); // never delivered
    rig.feed(&wire);
    assert_eq!(rig.got(), names(2));
    assert!(rig.fake.closing.get());
    rig.lose(CloseReason::LocalClose);
    let err = protocol_error(&rig.log.lost.borrow());
    assert!(
        matches!(
            err,
            CodecError::MissingRequired {
                message: "bank.GetBalance",
                field: "customer_id",
                tag: 1
            }
        ),
        "{err:?}"
    );
}

/// Records replies and how the connection ended.
struct Sums(Rc<RefCell<Vec<i64>>>, Rc<RefCell<Option<CloseReason>>>);

impl MessageHandler for Sums {
    type In = AddReply;
    type Out = AddRequest;
    fn message_received(&mut self, r: AddReply) {
        self.0.borrow_mut().push(r.sum);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        *self.1.borrow_mut() = Some(reason);
    }
}

#[test]
fn service_answers_whole_requests_then_refuses_one_missing_a_field() {
    run(|h| async move {
        let svc = adder();
        let server = serve(&h, move || svc.protocol());
        let sums = Rc::new(RefCell::new(Vec::new()));
        let lost = Rc::new(RefCell::new(None));
        let (s, l) = (sums.clone(), lost.clone());
        let (t, _) = h
            .create_connection(
                move || Framed::new(Sums(s, l)),
                addr(&server),
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        let codec = MessageCodec::<(), AddRequest>::new();
        let mut wire = codec.encode_frame(&add(3, 4)).unwrap().to_vec();
        wire.extend_from_slice(&unhex("0002 0803")); // AddRequest { a: 3 }, no b
        wire.extend_from_slice(&codec.encode_frame(&add(1, 1)).unwrap());
        t.write(&wire).unwrap();
        until(&h, || lost.borrow().is_some()).await;
        assert_eq!(
            *sums.borrow(),
            [7],
            "the whole request before it is answered"
        );
        server.close();
    });
}

#[test]
fn enveloped_service_refuses_a_body_missing_a_field() {
    run(|h| async move {
        let svc = adder().with_ids();
        let server = serve(&h, move || svc.protocol());
        let lost = Rc::new(Cell::new(false));
        let l = lost.clone();
        /// A raw envelope client.
        struct Raw(Rc<Cell<bool>>);
        impl MessageHandler for Raw {
            type In = Envelope;
            type Out = Envelope;
            fn message_received(&mut self, _: Envelope) {}
            fn connection_lost(&mut self, _: CloseReason) {
                self.0.set(true);
            }
        }
        let (t, _) = h
            .create_connection(
                move || Framed::new(Raw(l)),
                addr(&server),
                ConnectOptions::default(),
            )
            .await
            .unwrap();
        let envelope = Envelope {
            id: 1,
            body: Bytes::from_static(&[0x10, 0x04]), // AddRequest { b: 4 }, no a
        };
        let frame = MessageCodec::<(), Envelope>::new()
            .encode_frame(&envelope)
            .unwrap();
        t.write(&frame).unwrap();
        until(&h, || lost.get()).await;
        server.close();
    });
}

#[test]
fn client_call_fails_when_the_reply_misses_a_field() {
    run(|h| async move {
        // A server that answers every request with an empty AddReply frame.
        struct Empty(Option<protoloop::Transport>);
        impl protoloop::Protocol for Empty {
            fn connection_made(&mut self, t: protoloop::Transport) {
                self.0 = Some(t);
            }
            fn data_received(&mut self, _: &[u8]) {
                let _ = self.0.as_ref().unwrap().write(&[0, 0]);
            }
        }
        let server = serve(&h, || Empty(None));
        let client: RpcClient<AddRequest, AddReply> =
            RpcClient::connect(&h, addr(&server), RpcOptions::new())
                .await
                .unwrap();
        match client.call(add(1, 2)).await {
            Err(RpcError::ConnectionLost(CloseReason::Protocol(e))) => {
                let e = e.downcast_ref::<CodecError>().expect("a CodecError");
                assert!(
                    matches!(
                        e,
                        CodecError::MissingRequired {
                            message: "adder.AddReply",
                            tag: 1,
                            ..
                        }
                    ),
                    "{e:?}"
                );
            }
            other => panic!("expected the call to fail with the codec error, got {other:?}"),
        }
        server.close();
    });
}
