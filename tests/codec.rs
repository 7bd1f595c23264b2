//! The codecs: byte-exact demo encodings, and the frame codec fed one byte
//! at a time, split at every point, and given bad input. The framing
//! adapter's tests are in `framed.rs`.

use bytes::BytesMut;
use prost::Message;
use protoloop::codec::{CodecError, FrameCodec, LengthPrefix, MessageCodec};
use protoloop::proto::bank::{GetBalance, Response};
use protoloop::proto::customer::{Reply, Request, RequestType};
use tokio_util::codec::{Decoder, Encoder};

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn framed<M: Message>(m: &M) -> Vec<u8> {
    MessageCodec::<(), M>::new()
        .encode_frame(m)
        .unwrap()
        .to_vec()
}

fn jane() -> String {
    "Jane Doe".to_string()
}

/// Encode to the demo's exact bytes, and decode them back.
fn check_vector<M: Message + Default + PartialEq + std::fmt::Debug + 'static>(m: M, hex: &str) {
    let wire = unhex(hex);
    assert_eq!(framed(&m), wire, "{m:?}");
    let mut codec = MessageCodec::<M>::new();
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(m));
    assert!(buf.is_empty());
}

#[test]
fn demo_messages_byte_exact() {
    let withdraw = Request {
        customer_id: jane(),
        request_type: RequestType::Withdraw as i32,
        amount: 100.0,
    };
    check_vector(withdraw, "0011 0a084a616e6520446f65 1002 1d0000c842");
    check_vector(
        GetBalance {
            customer_id: jane(),
        },
        "000a 0a084a616e6520446f65",
    );
    check_vector(
        Response {
            customer_id: jane(),
            balance: 100.0,
        },
        "000f 0a084a616e6520446f65 150000c842",
    );
    check_vector(
        Reply {
            success: true,
            balance: 0.0,
        },
        "0007 0801 1500000000",
    );
    check_vector(
        Reply {
            success: true,
            balance: 400.0,
        },
        "0007 0801 150000c843",
    );
    check_vector(
        Reply {
            success: false,
            balance: 0.0,
        },
        "0007 0800 1500000000",
    );
}

#[test]
fn required_defaults_stay_on_the_wire() {
    // proto2 `required`: an empty id and a zero balance are still encoded.
    let r = Response {
        customer_id: String::new(),
        balance: 0.0,
    };
    assert_eq!(framed(&r), unhex("0007 0a00 1500000000"));
    let deposit = Request {
        customer_id: String::new(),
        request_type: RequestType::Deposit as i32,
        amount: 0.0,
    };
    assert_eq!(framed(&deposit), unhex("0009 0a00 1001 1d00000000"));
}

fn codecs() -> Vec<FrameCodec> {
    [
        LengthPrefix::U16Be,
        LengthPrefix::U32Be,
        LengthPrefix::Varint,
    ]
    .into_iter()
    .map(|p| FrameCodec::builder().length_prefix(p).build())
    .collect()
}

/// Payloads of assorted sizes, including empty and ones needing a 2-byte
/// varint prefix.
fn payloads() -> Vec<Vec<u8>> {
    vec![
        vec![],
        b"a".to_vec(),
        (0..127u8).collect(),
        (0..=255u8).cycle().take(128).collect(),
        (0..=255u8).cycle().take(300).collect(),
        b"tail".to_vec(),
    ]
}

fn encode_all(codec: &mut FrameCodec, payloads: &[Vec<u8>]) -> BytesMut {
    let mut wire = BytesMut::new();
    for p in payloads {
        codec.encode(&p[..], &mut wire).unwrap();
    }
    wire
}

#[test]
fn frame_codec_one_byte_at_a_time() {
    for mut codec in codecs() {
        let payloads = payloads();
        let wire = encode_all(&mut codec, &payloads);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f.to_vec());
            }
        }
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        assert_eq!(got, payloads, "{:?}", codec.length_prefix());
    }
}

#[test]
fn frame_codec_split_at_every_point() {
    for mut codec in codecs() {
        let payloads = payloads();
        let wire = encode_all(&mut codec, &payloads);
        for split in 0..=wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(got, payloads, "{:?} split {split}", codec.length_prefix());
        }
    }
}

#[test]
fn thousand_frames_in_one_buffer() {
    for mut codec in codecs() {
        let payloads: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut wire = encode_all(&mut codec, &payloads);
        let mut got = Vec::new();
        while let Some(f) = codec.decode(&mut wire).unwrap() {
            got.push(f.to_vec());
        }
        assert_eq!(got, payloads);
    }
}

#[test]
fn oversize_frames_are_refused_both_ways() {
    for prefix in [
        LengthPrefix::U16Be,
        LengthPrefix::U32Be,
        LengthPrefix::Varint,
    ] {
        let mut codec = FrameCodec::builder()
            .length_prefix(prefix)
            .max_frame_length(10)
            .build();
        let mut wire = BytesMut::new();
        let err = codec.encode(&[0u8; 11][..], &mut wire).unwrap_err();
        assert!(matches!(
            err,
            CodecError::FrameTooLarge {
                length: 11,
                max: 10
            }
        ));
        assert!(wire.is_empty(), "nothing written for {prefix:?}");

        // A good frame, then an oversize length: the good one comes out
        // first, then the error names the length and the limit.
        let mut big = FrameCodec::builder().length_prefix(prefix).build();
        let mut incoming = BytesMut::new();
        big.encode(&b"ok"[..], &mut incoming).unwrap();
        big.encode(&[1u8; 1000][..], &mut incoming).unwrap();
        assert_eq!(&codec.decode(&mut incoming).unwrap().unwrap()[..], b"ok");
        let err = codec.decode(&mut incoming).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::FrameTooLarge {
                    length: 1000,
                    max: 10
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("1000") && err.to_string().contains("10"));
    }
}

#[test]
fn undecodable_and_partial_input_is_an_error() {
    let mut codec = MessageCodec::<GetBalance>::new();
    // Field 1 says 8 bytes of string but the frame holds 2.
    let mut buf = BytesMut::from(&unhex("0004 0a08 4a61")[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, CodecError::Decode { length: 4, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("GetBalance"), "{err}");

    let mut buf = BytesMut::from(&unhex("000a 0a084a61")[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        CodecError::PartialFrame {
            buffered: 6,
            expected: Some(12)
        }
    ));
}
