//! The Protocol Buffers wire format, just enough to read ONNX messages and re-encode the few
//! fields the rewrite changes while every other field, known or not, is copied byte for byte.

/// A malformed message (the graph is then served as it is, never half-edited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("protobuf message truncated at byte {0}")]
    Truncated(usize),
    #[error("malformed varint at byte {0}")]
    Varint(usize),
    #[error("unsupported wire type {wire} at byte {at}")]
    WireType { wire: u64, at: usize },
    #[error("field {0} has an unexpected wire type")]
    FieldType(u32),
    #[error("field {0} is not valid UTF-8")]
    Utf8(u32),
}

/// One field's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// One field as it appears in the message, with its exact encoding (key included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    pub(crate) fn bytes(&self) -> Result<&'a [u8], WireError> {
        match self.value {
            Value::Bytes(b) => Ok(b),
            _ => Err(WireError::FieldType(self.number)),
        }
    }

    pub(crate) fn str(&self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::Utf8(self.number))
    }

    pub(crate) fn varint(&self) -> Result<u64, WireError> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(WireError::FieldType(self.number)),
        }
    }

    /// An `int64`/`int32`/enum field (negative values are ten-byte two's complement).
    pub(crate) fn int(&self) -> Result<i64, WireError> {
        Ok(self.varint()? as i64)
    }

    /// A repeated integer field occurrence: packed (one length-delimited run) or not.
    pub(crate) fn ints(&self) -> Result<Vec<i64>, WireError> {
        match self.value {
            Value::Varint(v) => Ok(vec![v as i64]),
            Value::Bytes(b) => {
                let mut out = Vec::new();
                let mut at = 0;
                while at < b.len() {
                    let (v, next) = varint(b, at)?;
                    out.push(v as i64);
                    at = next;
                }
                Ok(out)
            }
            _ => Err(WireError::FieldType(self.number)),
        }
    }

    /// A repeated `float` field occurrence: packed or not.
    pub(crate) fn floats(&self) -> Result<Vec<f32>, WireError> {
        match self.value {
            Value::Fixed32(v) => Ok(vec![f32::from_bits(v)]),
            Value::Bytes(b) if b.len() % 4 == 0 => Ok(b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            _ => Err(WireError::FieldType(self.number)),
        }
    }
}

fn varint(buf: &[u8], start: usize) -> Result<(u64, usize), WireError> {
    let mut value = 0u64;
    for (i, at) in (start..buf.len()).enumerate().take(10) {
        let b = buf[at];
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, at + 1));
        }
    }
    if buf.len() < start + 10 {
        Err(WireError::Truncated(buf.len()))
    } else {
        Err(WireError::Varint(start))
    }
}

/// Every field of a message, in order.
pub(crate) fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, WireError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let (key, next) = varint(buf, at)?;
        at = next;
        let number = u32::try_from(key >> 3).map_err(|_| WireError::Varint(start))?;
        let value = match key & 7 {
            0 => {
                let (v, next) = varint(buf, at)?;
                at = next;
                Value::Varint(v)
            }
            1 => {
                let bytes = buf.get(at..at + 8).ok_or(WireError::Truncated(at))?;
                at += 8;
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                Value::Fixed64(u64::from_le_bytes(b))
            }
            2 => {
                let (len, next) = varint(buf, at)?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated(next))?;
                let end = next.checked_add(len).ok_or(WireError::Truncated(next))?;
                let bytes = buf.get(next..end).ok_or(WireError::Truncated(next))?;
                at = end;
                Value::Bytes(bytes)
            }
            5 => {
                let bytes = buf.get(at..at + 4).ok_or(WireError::Truncated(at))?;
                at += 4;
                Value::Fixed32(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            wire => return Err(WireError::WireType { wire, at: start }),
        };
        if number == 0 {
            return Err(WireError::Varint(start));
        }
        out.push(Field {
            number,
            value,
            raw: &buf[start..at],
        });
    }
    Ok(out)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (string, bytes, message, packed run).
pub(crate) fn put_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// A varint field (ints and enums; negative values as ten-byte two's complement).
pub(crate) fn put_int(out: &mut Vec<u8>, number: u32, v: i64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v as u64);
}

/// A packed repeated int64 field.
pub(crate) fn put_packed_ints(out: &mut Vec<u8>, number: u32, values: &[i64]) {
    let mut run = Vec::new();
    for v in values {
        put_varint(&mut run, *v as u64);
    }
    put_bytes(out, number, &run);
}

/// Re-encodes `message` with the `nth` occurrence of field `number` (a length-delimited one)
/// replaced by `edit(payload)`; every other field is copied as it was.
pub(crate) fn edit_nth(
    message: &[u8],
    number: u32,
    nth: usize,
    edit: impl FnOnce(&[u8]) -> Result<Vec<u8>, WireError>,
) -> Result<Vec<u8>, WireError> {
    let mut edit = Some(edit);
    let mut seen = 0;
    let mut out = Vec::with_capacity(message.len() + 16);
    for f in fields(message)? {
        if f.number == number {
            if seen == nth {
                if let Some(edit) = edit.take() {
                    put_bytes(&mut out, number, &edit(f.bytes()?)?);
                    seen += 1;
                    continue;
                }
            }
            seen += 1;
        }
        out.extend_from_slice(f.raw);
    }
    if edit.is_some() {
        return Err(WireError::FieldType(number));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_byte_for_byte_including_unknown_ones() {
        let mut msg = Vec::new();
        put_int(&mut msg, 1, 300);
        put_int(&mut msg, 2, -5);
        put_bytes(&mut msg, 9, b"hello");
        // Unknown field numbers and the fixed-width wire types survive as they were.
        put_varint(&mut msg, (77 << 3) | 5);
        msg.extend_from_slice(&[1, 2, 3, 4]);
        put_varint(&mut msg, (15 << 3) | 1);
        msg.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let parsed = fields(&msg).unwrap();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[0].int().unwrap(), 300);
        assert_eq!(parsed[1].int().unwrap(), -5);
        assert_eq!(parsed[2].str().unwrap(), "hello");
        let copied: Vec<u8> = parsed.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(copied, msg);
    }

    #[test]
    fn packed_and_unpacked_repeated_ints_read_alike() {
        let mut packed = Vec::new();
        put_packed_ints(&mut packed, 1, &[1, 77, -1]);
        let mut unpacked = Vec::new();
        for v in [1, 77, -1] {
            put_int(&mut unpacked, 1, v);
        }
        let read = |m: &[u8]| -> Vec<i64> {
            fields(m)
                .unwrap()
                .iter()
                .flat_map(|f| f.ints().unwrap())
                .collect()
        };
        assert_eq!(read(&packed), vec![1, 77, -1]);
        assert_eq!(read(&unpacked), vec![1, 77, -1]);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(fields(&[0x0a, 0x05, b'a']).is_err(), "length past the end");
        assert!(fields(&[0x80]).is_err(), "unterminated varint");
        assert!(fields(&[0x0b]).is_err(), "group wire type");
        assert!(fields(&[0x00, 0x00]).is_err(), "field number 0");
        assert!(fields(&[0xff; 12]).is_err(), "over-long varint");
    }

    #[test]
    fn edit_nth_replaces_one_occurrence_only() {
        let mut msg = Vec::new();
        put_bytes(&mut msg, 3, b"a");
        put_int(&mut msg, 4, 1);
        put_bytes(&mut msg, 3, b"b");
        let out = edit_nth(&msg, 3, 1, |_| Ok(b"zz".to_vec())).unwrap();
        let f = fields(&out).unwrap();
        assert_eq!(f[0].str().unwrap(), "a");
        assert_eq!(f[1].int().unwrap(), 1);
        assert_eq!(f[2].str().unwrap(), "zz");
        assert!(edit_nth(&msg, 3, 2, |p| Ok(p.to_vec())).is_err());
    }
}
