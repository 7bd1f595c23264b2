//! proto2 `required` fields: [`Required`], [`RequiredFields`] and the
//! wire scan that finds a missing one.
//!
//! prost decodes a message whose required field is absent as if the field
//! held its default, where protobuf's own runtimes (the demo's Python
//! among them) refuse it. [`MessageCodec`](super::MessageCodec) closes that
//! gap: after prost has decoded a frame, one pass over the frame's
//! top-level fields (tag varints, values skipped by wire type) checks that
//! each required field appeared at least once. Nested messages are not
//! looked into.
//!
//! `build.rs` writes an impl of [`Required`] for every message generated
//! from `proto/` that has required fields, from the same descriptors
//! prost-build reads, and a lookup by `TypeId` that the codec uses, so the
//! crate's own messages are checked wherever they are decoded
//! ([`MessageCodec`](super::MessageCodec), [`Framed`](super::Framed),
//! [`rpc`](crate::rpc)) with no bound on message types. Messages from
//! elsewhere are not checked unless their fields are given with
//! [`MessageCodec::required`](super::MessageCodec::required).

use std::any::TypeId;

use super::CodecError;

/// The `required` fields of one proto2 message type.
///
/// ```
/// use protoloop::codec::{Required, RequiredFields};
/// use protoloop::proto::customer::Reply;
///
/// let fields = Reply::REQUIRED;
/// assert_eq!(fields.message(), "customer.Reply");
/// assert_eq!(fields.fields(), &[(1, "success"), (2, "balance")]);
/// // Field 2 (balance) is missing: just `success = true`.
/// assert!(fields.check(&[0x08, 0x01]).is_err());
/// assert!(fields.check(&[0x08, 0x01, 0x15, 0, 0, 0, 0]).is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequiredFields {
    message: &'static str,
    fields: &'static [(u32, &'static str)],
}

impl RequiredFields {
    /// The required fields `fields` (tag, name) of the message whose full
    /// protobuf name is `message` (for example `"bank.GetBalance"`).
    ///
    /// ```
    /// use protoloop::codec::RequiredFields;
    /// const PING: RequiredFields = RequiredFields::new("demo.Ping", &[(1, "seq")]);
    /// assert_eq!(PING.message(), "demo.Ping");
    /// ```
    pub const fn new(message: &'static str, fields: &'static [(u32, &'static str)]) -> Self {
        RequiredFields { message, fields }
    }

    /// The required fields of `T` when it is one of the messages generated
    /// from the crate's `proto/` schemas and has any; `None` otherwise.
    ///
    /// ```
    /// use protoloop::codec::{Required, RequiredFields};
    /// use protoloop::proto::bank::GetBalance;
    ///
    /// assert_eq!(RequiredFields::of::<GetBalance>(), Some(GetBalance::REQUIRED));
    /// assert_eq!(RequiredFields::of::<String>(), None);
    /// ```
    pub fn of<T: 'static>() -> Option<RequiredFields> {
        crate::proto::generated_required_fields(TypeId::of::<T>())
    }

    /// The message's full protobuf name.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// `(tag, name)` of each required field.
    pub fn fields(&self) -> &'static [(u32, &'static str)] {
        self.fields
    }

    /// Check that every required field appears among the top-level fields
    /// of `payload`, an encoded message, in one pass over its bytes.
    ///
    /// Fails with [`CodecError::MissingRequired`] naming the first required
    /// field (in declaration order) that is absent. Bytes that are not
    /// well-formed protobuf end the scan without an error: telling those
    /// apart is prost's job, and the codec runs this only on frames prost
    /// decoded.
    pub fn check(&self, payload: &[u8]) -> Result<(), CodecError> {
        let n = self.fields.len();
        if n == 0 {
            return Ok(());
        }
        if n <= 64 {
            // One word of bits: the common case, and a hot one (every
            // frame a service or client receives goes through here).
            let mut seen = 0u64;
            scan_top_level_tags(payload, |tag| {
                if let Some(i) = self.fields.iter().position(|&(t, _)| t == tag) {
                    seen |= 1 << i;
                }
            });
            let all = u64::MAX >> (64 - n);
            if seen == all {
                return Ok(());
            }
            let i = (!seen).trailing_zeros() as usize;
            return Err(CodecError::MissingRequired {
                message: self.message,
                field: self.fields[i].1,
                tag: self.fields[i].0,
            });
        }
        // One bit per required field, in the order of `fields`; a message
        // with more than 64 required fields (rare) gets a heap bitmap.
        let mut seen = vec![0u64; n.div_ceil(64)];
        scan_top_level_tags(payload, |tag| {
            if let Some(i) = self.fields.iter().position(|&(t, _)| t == tag) {
                seen[i / 64] |= 1 << (i % 64);
            }
        });
        match (0..n).find(|&i| seen[i / 64] & (1 << (i % 64)) == 0) {
            None => Ok(()),
            Some(i) => Err(CodecError::MissingRequired {
                message: self.message,
                field: self.fields[i].1,
                tag: self.fields[i].0,
            }),
        }
    }
}

/// A proto2 message type with `required` fields.
///
/// `build.rs` implements it for the crate's messages in [`proto`](crate::proto)
/// that have required fields. Implement it for your own message types to
/// hand their fields to [`MessageCodec::required`](super::MessageCodec::required)
/// as `Some(MyMessage::REQUIRED)`.
///
/// ```
/// use protoloop::codec::Required;
/// use protoloop::proto::customer::Request;
///
/// let tags: Vec<u32> = Request::REQUIRED.fields().iter().map(|&(tag, _)| tag).collect();
/// assert_eq!(tags, [1, 2, 3]);
/// ```
pub trait Required {
    /// The message's required fields.
    const REQUIRED: RequiredFields;
}

/// Call `f` with the field number of each top-level field of `buf`, in
/// order, stopping quietly at the first malformed byte. Groups count as
/// one field (their start tag); the fields inside them are skipped.
fn scan_top_level_tags(buf: &[u8], mut f: impl FnMut(u32)) {
    let mut pos = 0;
    let mut depth = 0u32;
    while pos < buf.len() {
        let Some(key) = read_varint(buf, &mut pos) else {
            return;
        };
        let Ok(tag) = u32::try_from(key >> 3) else {
            return;
        };
        let skip = match key & 7 {
            0 => match read_varint(buf, &mut pos) {
                Some(_) => 0,
                None => return,
            },
            1 => 8,
            2 => match read_varint(buf, &mut pos).and_then(|len| usize::try_from(len).ok()) {
                Some(len) => len,
                None => return,
            },
            3 => {
                if depth == 0 {
                    f(tag);
                }
                depth += 1;
                continue;
            }
            4 => {
                let Some(d) = depth.checked_sub(1) else {
                    return;
                };
                depth = d;
                continue;
            }
            5 => 4,
            _ => return,
        };
        if depth == 0 {
            f(tag);
        }
        match pos.checked_add(skip) {
            Some(end) if end <= buf.len() => pos = end,
            _ => return,
        }
    }
}

/// A base-128 varint at `*pos` (at most 10 bytes), advancing `*pos`.
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    // Keys of fields 1 to 15 and short lengths are one byte.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(buf: &[u8]) -> Vec<u32> {
        let mut v = Vec::new();
        scan_top_level_tags(buf, |t| v.push(t));
        v
    }

    #[test]
    fn scans_every_wire_type() {
        let buf = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 2, 3, 4, 5, 6, 7, 8, // 2: fixed64
            0x1a, 0x02, b'h', b'i', // 3: 2 bytes
            0x25, 1, 2, 3, 4, // 4: fixed32
            0x2b, 0x08, 0x01, 0x33, 0x34, 0x2c, // 5: group holding 1 and a group 6
            0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00, // 536870911: varint 0
        ];
        assert_eq!(tags(&buf), [1, 2, 3, 4, 5, 536_870_911]);
    }

    #[test]
    fn stops_at_malformed_bytes() {
        // A length past the end, a truncated varint, an unknown wire type,
        // an end group with no start, an 11-byte varint key.
        assert_eq!(tags(&[0x08, 0x01, 0x12, 0x05, b'a']), [1, 2]);
        assert_eq!(tags(&[0x08, 0x80]), Vec::<u32>::new());
        assert_eq!(tags(&[0x08, 0x01, 0x0e]), [1]);
        assert_eq!(tags(&[0x0c, 0x08, 0x01]), Vec::<u32>::new());
        assert_eq!(tags(&[0xff; 11]), Vec::<u32>::new());
        let huge_len = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(tags(&huge_len), [1]);
    }

    #[test]
    fn names_the_first_missing_field_in_declaration_order() {
        let req = RequiredFields::new("t.Three", &[(3, "c"), (1, "a"), (2, "b")]);
        assert!(req.check(&[0x18, 0, 0x08, 0, 0x10, 0]).is_ok());
        // Only field 3 ("c", declared first) is there: "a" is reported.
        match req.check(&[0x18, 0]) {
            Err(CodecError::MissingRequired {
                field: "a", tag: 1, ..
            }) => {}
            other => panic!("expected field a missing, got {other:?}"),
        }
        // A 2-byte varint value and a multi-byte key do not confuse the scan.
        match req.check(&[0x08, 0x96, 0x01, 0xf8, 0x01, 0, 0x18, 0]) {
            Err(CodecError::MissingRequired {
                field: "b", tag: 2, ..
            }) => {}
            other => panic!("expected field b missing, got {other:?}"),
        }
    }

    #[test]
    fn more_than_64_required_fields() {
        let fields: Vec<(u32, &'static str)> = (1..=70).map(|t| (t, "f")).collect();
        let req = RequiredFields::new("t.Big", fields.leak());
        // Tags up to 15 fit in one key byte; 16..=70 need two.
        let buf: Vec<u8> = (1..=70u32)
            .filter(|&t| t != 66)
            .flat_map(|t| {
                let key = t << 3;
                if key < 0x80 {
                    vec![key as u8, 0]
                } else {
                    vec![(key as u8) | 0x80, (key >> 7) as u8, 0]
                }
            })
            .collect();
        match req.check(&buf) {
            Err(CodecError::MissingRequired { tag: 66, .. }) => {}
            other => panic!("expected field 66 missing, got {other:?}"),
        }
    }
}
