//! Canonical OER primitives as Interledger uses them (RFC 30).
//!
//! * Fixed-size unsigned integers are big-endian (`u8`, `u16`, `u32`, `u64`).
//! * A length determinant is one byte `0..=127` (short form), or `0x80 | n`
//!   followed by `n` big-endian length bytes (long form). Canonical OER allows the
//!   long form only for lengths of 128 and more, with no leading zero byte; anything
//!   else is rejected, as is a length-of-length above 8.
//! * A variable-length octet string is a length determinant and that many bytes.
//! * A variable-length unsigned integer is a length determinant (1..=8) and the
//!   minimal big-endian bytes of the value (no leading zero byte; zero is `01 00`).
//!
//! [`Reader`] never panics and never allocates: it hands out sub-slices of its input,
//! and every length the input claims is compared with what is actually left before
//! anything is read. Every read names the field it reads, so errors say which field
//! was wrong.

use thiserror::Error;

/// Largest length-of-length accepted in a long-form length determinant.
pub const MAX_LENGTH_OF_LENGTH: u8 = 8;

/// A malformed or truncated OER value. `field` names the field being read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OerError {
    /// Fewer bytes remain than a fixed-size field needs.
    #[error("{field}: unexpected end of input: needs {needed} bytes, {remaining} remaining")]
    UnexpectedEnd {
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// A length determinant claims more bytes than remain.
    #[error("{field}: length {length} exceeds remaining {remaining} bytes")]
    LengthExceedsRemaining {
        field: &'static str,
        length: u64,
        remaining: usize,
    },
    /// A length determinant is above the field's own limit.
    #[error("{field}: length {length} exceeds maximum {max}")]
    LengthExceedsMax {
        field: &'static str,
        length: u64,
        max: usize,
    },
    /// A long-form length that the short form, or fewer bytes, could have encoded.
    #[error(
        "{field}: non-canonical length determinant ({length} in {length_of_length} length bytes)"
    )]
    NonCanonicalLength {
        field: &'static str,
        length: u64,
        length_of_length: u8,
    },
    /// A long-form length determinant with more than 8 length bytes.
    #[error("{field}: length-of-length {length_of_length} exceeds 8")]
    LengthOfLengthTooLarge {
        field: &'static str,
        length_of_length: u8,
    },
    /// A variable-length integer of zero bytes.
    #[error("{field}: variable-length integer has no bytes")]
    EmptyVarUint { field: &'static str },
    /// A variable-length integer wider than 64 bits.
    #[error("{field}: variable-length integer of {length} bytes exceeds 8")]
    VarUintTooLarge { field: &'static str, length: usize },
    /// A variable-length integer with a leading zero byte.
    #[error("{field}: non-canonical variable-length integer (leading zero byte)")]
    NonCanonicalVarUint { field: &'static str },
    /// A count of items that the remaining bytes cannot possibly hold.
    #[error("{field}: count {count} exceeds what the remaining {remaining} bytes can hold")]
    CountExceedsRemaining {
        field: &'static str,
        count: u64,
        remaining: usize,
    },
    /// Bytes left over after the last field.
    #[error("{count} trailing bytes after {field}")]
    TrailingBytes { field: &'static str, count: usize },
}

/// A cursor over a byte slice. Reads return sub-slices of the input (no copies) and
/// fail cleanly on truncated or non-canonical input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The bytes not yet read, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Read exactly `n` bytes.
    pub fn read_bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], OerError> {
        if n > self.rest.len() {
            return Err(OerError::UnexpectedEnd {
                field,
                needed: n,
                remaining: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Read a fixed-length octet string of `N` bytes.
    pub fn read_array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], OerError> {
        let bytes = self.read_bytes(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Read a `u8`.
    pub fn read_u8(&mut self, field: &'static str) -> Result<u8, OerError> {
        Ok(u8::from_be_bytes(self.read_array(field)?))
    }

    /// Read a big-endian `u16`.
    pub fn read_u16(&mut self, field: &'static str) -> Result<u16, OerError> {
        Ok(u16::from_be_bytes(self.read_array(field)?))
    }

    /// Read a big-endian `u32`.
    pub fn read_u32(&mut self, field: &'static str) -> Result<u32, OerError> {
        Ok(u32::from_be_bytes(self.read_array(field)?))
    }

    /// Read a big-endian `u64`.
    pub fn read_u64(&mut self, field: &'static str) -> Result<u64, OerError> {
        Ok(u64::from_be_bytes(self.read_array(field)?))
    }

    /// Read a canonical length determinant, without checking it against the input.
    fn read_raw_length(&mut self, field: &'static str) -> Result<u64, OerError> {
        let first = self.read_u8(field)?;
        if first & 0x80 == 0 {
            return Ok(u64::from(first));
        }
        let length_of_length = first & 0x7f;
        if length_of_length > MAX_LENGTH_OF_LENGTH {
            return Err(OerError::LengthOfLengthTooLarge {
                field,
                length_of_length,
            });
        }
        let bytes = self.read_bytes(usize::from(length_of_length), field)?;
        let length = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let leading_zero = bytes.first().is_none_or(|&b| b == 0);
        if leading_zero || length < 128 {
            return Err(OerError::NonCanonicalLength {
                field,
                length,
                length_of_length,
            });
        }
        Ok(length)
    }

    /// Read a length determinant and check that at least that many bytes remain.
    pub fn read_length(&mut self, field: &'static str) -> Result<usize, OerError> {
        let length = self.read_raw_length(field)?;
        let remaining = self.rest.len();
        match usize::try_from(length) {
            Ok(n) if n <= remaining => Ok(n),
            _ => Err(OerError::LengthExceedsRemaining {
                field,
                length,
                remaining,
            }),
        }
    }

    /// Read a variable-length octet string.
    pub fn read_var_octets(&mut self, field: &'static str) -> Result<&'a [u8], OerError> {
        let n = self.read_length(field)?;
        self.read_bytes(n, field)
    }

    /// Read a variable-length octet string of at most `max` bytes. The limit is
    /// checked before the remaining input, so an oversize claim reports the limit.
    pub fn read_var_octets_max(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], OerError> {
        let length = self.read_raw_length(field)?;
        if length > max as u64 {
            return Err(OerError::LengthExceedsMax { field, length, max });
        }
        // length <= max, a usize.
        let n = length as usize;
        if n > self.rest.len() {
            return Err(OerError::LengthExceedsRemaining {
                field,
                length,
                remaining: self.rest.len(),
            });
        }
        self.read_bytes(n, field)
    }

    /// Read a canonical variable-length unsigned integer of at most 64 bits.
    pub fn read_var_uint(&mut self, field: &'static str) -> Result<u64, OerError> {
        let bytes = self.read_var_octets(field)?;
        match bytes {
            [] => Err(OerError::EmptyVarUint { field }),
            [_, _, _, _, _, _, _, _, _, ..] => Err(OerError::VarUintTooLarge {
                field,
                length: bytes.len(),
            }),
            [0, _, ..] => Err(OerError::NonCanonicalVarUint { field }),
            _ => Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))),
        }
    }

    /// Read a var-uint item count and check that the remaining input could hold
    /// that many items of at least `min_item_size` bytes each. Callers may then size
    /// buffers from the count without trusting the input.
    pub fn read_count(
        &mut self,
        field: &'static str,
        min_item_size: usize,
    ) -> Result<usize, OerError> {
        let count = self.read_var_uint(field)?;
        let remaining = self.rest.len();
        let capacity = remaining / min_item_size.max(1);
        match usize::try_from(count) {
            Ok(n) if n <= capacity => Ok(n),
            _ => Err(OerError::CountExceedsRemaining {
                field,
                count,
                remaining,
            }),
        }
    }

    /// Succeed only if every byte has been read; `after` names the last field.
    pub fn finish(self, after: &'static str) -> Result<(), OerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(OerError::TrailingBytes {
                field: after,
                count: self.rest.len(),
            })
        }
    }
}

/// Number of bytes the length determinant of `len` takes.
pub fn length_determinant_size(len: usize) -> usize {
    if len < 128 {
        1
    } else {
        1 + significant_bytes(len as u64)
    }
}

/// Number of bytes a variable-length octet string of `len` bytes takes.
pub fn var_octets_size(len: usize) -> usize {
    length_determinant_size(len) + len
}

/// Number of bytes the variable-length unsigned integer `value` takes.
pub fn var_uint_size(value: u64) -> usize {
    1 + significant_bytes(value)
}

/// Bytes needed for `value` in big-endian without leading zeros (at least 1).
fn significant_bytes(value: u64) -> usize {
    let zero_bytes = (value.leading_zeros() / 8) as usize;
    (8 - zero_bytes).max(1)
}

/// An append-only OER encoder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// Write raw bytes (a fixed-length octet string).
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Write a `u8`.
    pub fn write_u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    /// Write a big-endian `u16`.
    pub fn write_u16(&mut self, value: u16) {
        self.write_bytes(&value.to_be_bytes());
    }

    /// Write a big-endian `u32`.
    pub fn write_u32(&mut self, value: u32) {
        self.write_bytes(&value.to_be_bytes());
    }

    /// Write a big-endian `u64`.
    pub fn write_u64(&mut self, value: u64) {
        self.write_bytes(&value.to_be_bytes());
    }

    /// Write the canonical length determinant of `len`.
    pub fn write_length(&mut self, len: usize) {
        if len < 128 {
            self.buf.push(len as u8);
        } else {
            let n = significant_bytes(len as u64);
            self.buf.push(0x80 | n as u8);
            let be = (len as u64).to_be_bytes();
            self.write_bytes(&be[8 - n..]);
        }
    }

    /// Write a variable-length octet string.
    pub fn write_var_octets(&mut self, bytes: &[u8]) {
        self.write_length(bytes.len());
        self.write_bytes(bytes);
    }

    /// Write a canonical variable-length unsigned integer.
    pub fn write_var_uint(&mut self, value: u64) {
        let n = significant_bytes(value);
        self.write_length(n);
        let be = value.to_be_bytes();
        self.write_bytes(&be[8 - n..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn length_determinant_rfc30_examples() {
        for (encoding, value) in [
            ("07", 7u64),
            ("8182", 130),
            ("821234", 4660),
            ("83ABCDEF", 11_259_375),
            ("88AC01055A1DEBAC1E", 12_394_193_534_107_495_454),
        ] {
            let bytes = hex(encoding);
            let mut r = Reader::new(&bytes);
            assert_eq!(r.read_raw_length("len").unwrap(), value, "{encoding}");
            assert!(r.is_empty());
            if let Ok(len) = usize::try_from(value) {
                let mut w = Writer::new();
                w.write_length(len);
                assert_eq!(w.as_slice(), &bytes[..], "{encoding}");
                assert_eq!(length_determinant_size(len), bytes.len());
            }
        }
    }

    #[test]
    fn rfc30_var_string_examples() {
        let short = hex("18657861 6D706C65 2E746F70 2E6D6964 646C652E 6C6F7765 72");
        let mut r = Reader::new(&short);
        assert_eq!(
            r.read_var_octets("address").unwrap(),
            b"example.top.middle.lower"
        );
        r.finish("address").unwrap();

        let text = "example.very.long.address.to.exceed.127.characters.and.trigger.a.long.form.length.determinant.to.show.how.that.works.great.as.well";
        let mut w = Writer::new();
        w.write_var_octets(text.as_bytes());
        assert_eq!(&w.as_slice()[..2], &[0x81, 0x82]);
        let mut r = Reader::new(w.as_slice());
        assert_eq!(r.read_var_octets("address").unwrap(), text.as_bytes());
    }

    #[test]
    fn fixed_uints_rfc30_examples() {
        let mut r = Reader::new(&[0x00, 0x12, 0x34, 0xAB, 0xAB, 0xAB, 0xAB]);
        assert_eq!(r.read_u8("a").unwrap(), 0);
        assert_eq!(r.read_u16("b").unwrap(), 4660);
        assert_eq!(r.read_u32("c").unwrap(), 2_880_154_539);
        let bytes = hex("AC01055A1DEBAC1E");
        assert_eq!(
            Reader::new(&bytes).read_u64("d").unwrap(),
            12_394_193_534_107_495_454
        );
    }

    #[test]
    fn rejects_non_canonical_lengths() {
        for bad in [
            &[0x80][..],               // long form with zero length bytes
            &[0x81, 0x05],             // 5 must be short form
            &[0x81, 0x7f],             // 127 must be short form
            &[0x82, 0x00, 0x80],       // leading zero
            &[0x82, 0x00, 0xff],       // leading zero
            &[0x83, 0x00, 0x01, 0x00], // leading zero
        ] {
            let err = Reader::new(bad).read_raw_length("len").unwrap_err();
            assert!(
                matches!(err, OerError::NonCanonicalLength { .. }),
                "{bad:?}: {err}"
            );
        }
        let err = Reader::new(&[0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1])
            .read_raw_length("len")
            .unwrap_err();
        assert!(matches!(
            err,
            OerError::LengthOfLengthTooLarge {
                length_of_length: 9,
                ..
            }
        ));
        // 0x81 0x80 = 128 is the smallest long form.
        assert_eq!(
            Reader::new(&[0x81, 0x80]).read_raw_length("len").unwrap(),
            128
        );
    }

    #[test]
    fn oversize_length_claims_are_rejected_before_reading() {
        let claim = [
            0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3,
        ];
        let err = Reader::new(&claim).read_var_octets("data").unwrap_err();
        assert_eq!(
            err,
            OerError::LengthExceedsRemaining {
                field: "data",
                length: u64::MAX,
                remaining: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "data: length 18446744073709551615 exceeds remaining 3 bytes"
        );
        let err = Reader::new(&[0x82, 0x80, 0x00])
            .read_var_octets_max("data", 100)
            .unwrap_err();
        assert_eq!(err.to_string(), "data: length 32768 exceeds maximum 100");
        let err = Reader::new(&[0x05, 1, 2])
            .read_var_octets("data")
            .unwrap_err();
        assert_eq!(err.to_string(), "data: length 5 exceeds remaining 2 bytes");
    }

    #[test]
    fn var_uint_encoding() {
        for (value, bytes) in [
            (0u64, &[0x01, 0x00][..]),
            (1, &[0x01, 0x01]),
            (255, &[0x01, 0xff]),
            (256, &[0x02, 0x01, 0x00]),
            (
                u64::MAX,
                &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ] {
            let mut w = Writer::new();
            w.write_var_uint(value);
            assert_eq!(w.as_slice(), bytes);
            assert_eq!(var_uint_size(value), bytes.len());
            assert_eq!(Reader::new(bytes).read_var_uint("n").unwrap(), value);
        }
        assert!(matches!(
            Reader::new(&[0x00]).read_var_uint("n"),
            Err(OerError::EmptyVarUint { .. })
        ));
        assert!(matches!(
            Reader::new(&[0x02, 0x00, 0x05]).read_var_uint("n"),
            Err(OerError::NonCanonicalVarUint { .. })
        ));
        assert!(matches!(
            Reader::new(&[0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0]).read_var_uint("n"),
            Err(OerError::VarUintTooLarge { length: 9, .. })
        ));
    }

    #[test]
    fn count_is_bounded_by_remaining_input() {
        let err = Reader::new(&[0x04, 0xff, 0xff, 0xff, 0xff, 0, 0, 0])
            .read_count("entries", 3)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "entries: count 4294967295 exceeds what the remaining 3 bytes can hold"
        );
        assert_eq!(
            Reader::new(&[0x01, 0x01, 0, 0, 0])
                .read_count("entries", 3)
                .unwrap(),
            1
        );
    }

    #[test]
    fn truncation_and_trailing_bytes() {
        let err = Reader::new(&[1, 2]).read_u32("request_id").unwrap_err();
        assert_eq!(
            err.to_string(),
            "request_id: unexpected end of input: needs 4 bytes, 2 remaining"
        );
        let mut r = Reader::new(&[1, 2, 3]);
        r.read_u8("type").unwrap();
        assert_eq!(
            r.finish("type").unwrap_err().to_string(),
            "2 trailing bytes after type"
        );
    }

    proptest! {
        #[test]
        fn var_octets_round_trip(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut w = Writer::new();
            w.write_var_octets(&data);
            prop_assert_eq!(w.len(), var_octets_size(data.len()));
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.read_var_octets("data").unwrap(), &data[..]);
            prop_assert!(r.finish("data").is_ok());
            for cut in 0..bytes.len() {
                prop_assert!(Reader::new(&bytes[..cut]).read_var_octets("data").is_err());
            }
        }

        #[test]
        fn var_uint_round_trip(value in any::<u64>()) {
            let mut w = Writer::new();
            w.write_var_uint(value);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.read_var_uint("n").unwrap(), value);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn length_round_trip(len in any::<usize>()) {
            let mut w = Writer::new();
            w.write_length(len);
            prop_assert_eq!(w.len(), length_determinant_size(len));
            let bytes = w.into_inner();
            prop_assert_eq!(Reader::new(&bytes).read_raw_length("len").unwrap(), len as u64);
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.read_var_uint("a");
            let _ = r.read_var_octets_max("b", 16);
            let _ = r.read_count("c", 3);
            let _ = r.read_length("d");
            let _ = r.read_u64("e");
        }
    }
}
