//! The handful of msgpack forms Grid's wire format uses, written and read by hand.
//!
//! Generic serializers choose their own integer widths and nil conventions; the wire
//! format fixes them (smallest unsigned form on write, any non-negative form on read,
//! `bin` for payloads), so the codec owns every byte.

use bytes::BufMut;

use super::DecodeError;

pub(crate) const NIL: u8 = 0xc0;
pub(crate) const FALSE: u8 = 0xc2;
pub(crate) const TRUE: u8 = 0xc3;
pub(crate) const BIN8: u8 = 0xc4;
pub(crate) const BIN16: u8 = 0xc5;
pub(crate) const BIN32: u8 = 0xc6;
pub(crate) const EXT8: u8 = 0xc7;
pub(crate) const EXT16: u8 = 0xc8;
pub(crate) const EXT32: u8 = 0xc9;
pub(crate) const UINT8: u8 = 0xcc;
pub(crate) const UINT16: u8 = 0xcd;
pub(crate) const UINT32: u8 = 0xce;
pub(crate) const UINT64: u8 = 0xcf;
pub(crate) const INT8: u8 = 0xd0;
pub(crate) const INT16: u8 = 0xd1;
pub(crate) const INT32: u8 = 0xd2;
pub(crate) const INT64: u8 = 0xd3;
pub(crate) const FIXEXT1: u8 = 0xd4;
pub(crate) const FIXEXT16: u8 = 0xd8;
pub(crate) const STR8: u8 = 0xd9;
pub(crate) const STR16: u8 = 0xda;
pub(crate) const STR32: u8 = 0xdb;
pub(crate) const ARRAY16: u8 = 0xdc;
pub(crate) const ARRAY32: u8 = 0xdd;
pub(crate) const MAP16: u8 = 0xde;
pub(crate) const MAP32: u8 = 0xdf;

/// Bytes the smallest unsigned form of `v` takes.
#[inline]
pub(crate) const fn uint_len(v: u64) -> usize {
    if v < 128 {
        1
    } else if v <= 0xff {
        2
    } else if v <= 0xffff {
        3
    } else if v <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// Writes `v` in the smallest unsigned msgpack form.
#[inline]
pub(crate) fn put_uint(out: &mut impl BufMut, v: u64) {
    if v < 128 {
        out.put_u8(v as u8);
    } else if v <= 0xff {
        out.put_slice(&[UINT8, v as u8]);
    } else if v <= 0xffff {
        out.put_u8(UINT16);
        out.put_u16(v as u16);
    } else if v <= 0xffff_ffff {
        out.put_u8(UINT32);
        out.put_u32(v as u32);
    } else {
        out.put_u8(UINT64);
        out.put_u64(v);
    }
}

/// Bytes a `bin` header for `len` payload bytes takes.
#[inline]
pub(crate) const fn bin_header_len(len: usize) -> usize {
    if len <= 0xff {
        2
    } else if len <= 0xffff {
        3
    } else {
        5
    }
}

/// Writes the smallest `bin` header for `len` bytes.
///
/// Lengths above `u32::MAX` cannot be expressed; callers bound payload sizes well below
/// that (the session's maximum frame size), so this is a broken invariant, not bad input.
#[inline]
pub(crate) fn put_bin_header(out: &mut impl BufMut, len: usize) {
    if len <= 0xff {
        out.put_slice(&[BIN8, len as u8]);
    } else if len <= 0xffff {
        out.put_u8(BIN16);
        out.put_u16(len as u16);
    } else {
        assert!(len <= u32::MAX as usize, "bin payload of {len} bytes");
        out.put_u8(BIN32);
        out.put_u32(len as u32);
    }
}

/// Writes `s` as the smallest msgpack `str`.
pub(crate) fn put_str(out: &mut impl BufMut, s: &str) {
    let len = s.len();
    if len < 32 {
        out.put_u8(0xa0 | len as u8);
    } else if len <= 0xff {
        out.put_slice(&[STR8, len as u8]);
    } else if len <= 0xffff {
        out.put_u8(STR16);
        out.put_u16(len as u16);
    } else {
        assert!(len <= u32::MAX as usize, "str of {len} bytes");
        out.put_u8(STR32);
        out.put_u32(len as u32);
    }
    out.put_slice(s.as_bytes());
}

/// Writes a map header for `n` entries (the control payloads have at most a handful).
pub(crate) fn put_map_header(out: &mut impl BufMut, n: u8) {
    debug_assert!(n < 16);
    out.put_u8(0x80 | n);
}

/// Writes a msgpack bool.
pub(crate) fn put_bool(out: &mut impl BufMut, v: bool) {
    out.put_u8(if v { TRUE } else { FALSE });
}

/// Reads msgpack values out of a byte slice, tracking the offset for error reports.
///
/// Every read checks the remaining length before slicing, so a lying length field
/// produces [`DecodeError::Truncated`] instead of an allocation or a panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self, field: &'static str, need: usize) -> DecodeError {
        DecodeError::Truncated {
            field,
            at: self.pos,
            need,
            have: self.remaining(),
        }
    }

    fn unexpected(&self, field: &'static str, byte: u8) -> DecodeError {
        DecodeError::UnexpectedType {
            field,
            at: self.pos,
            byte,
        }
    }

    #[inline]
    pub(crate) fn peek(&self, field: &'static str) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.truncated(field, 1))
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated(field, n));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn take_array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a non-negative integer in any msgpack integer form.
    pub(crate) fn read_uint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let at = self.pos;
        let b = self.peek(field)?;
        let (v, signed): (i128, bool) = match b {
            0x00..=0x7f => {
                self.pos += 1;
                return Ok(b as u64);
            }
            0xe0..=0xff => {
                return Err(DecodeError::Negative {
                    field,
                    at,
                    value: (b as i8) as i64,
                });
            }
            UINT8 | UINT16 | UINT32 | UINT64 | INT8 | INT16 | INT32 | INT64 => {
                self.pos += 1;
                match b {
                    UINT8 => (self.take_array::<1>(field)?[0] as i128, false),
                    UINT16 => (u16::from_be_bytes(self.take_array(field)?) as i128, false),
                    UINT32 => (u32::from_be_bytes(self.take_array(field)?) as i128, false),
                    UINT64 => (u64::from_be_bytes(self.take_array(field)?) as i128, false),
                    INT8 => (self.take_array::<1>(field)?[0] as i8 as i128, true),
                    INT16 => (i16::from_be_bytes(self.take_array(field)?) as i128, true),
                    INT32 => (i32::from_be_bytes(self.take_array(field)?) as i128, true),
                    _ => (i64::from_be_bytes(self.take_array(field)?) as i128, true),
                }
            }
            _ => return Err(self.unexpected(field, b)),
        };
        if signed && v < 0 {
            return Err(DecodeError::Negative {
                field,
                at,
                value: v as i64,
            });
        }
        Ok(v as u64)
    }

    /// Reads an integer that must fit `max`.
    pub(crate) fn read_uint_max(
        &mut self,
        field: &'static str,
        max: u64,
    ) -> Result<u64, DecodeError> {
        let at = self.pos;
        let v = self.read_uint(field)?;
        if v > max {
            return Err(DecodeError::Overflow {
                field,
                at,
                value: v,
                max,
            });
        }
        Ok(v)
    }

    /// Reads an array header and returns its element count.
    pub(crate) fn read_array_len(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.peek(field)?;
        match b {
            0x90..=0x9f => {
                self.pos += 1;
                Ok((b & 0x0f) as u32)
            }
            ARRAY16 => {
                self.pos += 1;
                Ok(u16::from_be_bytes(self.take_array(field)?) as u32)
            }
            ARRAY32 => {
                self.pos += 1;
                Ok(u32::from_be_bytes(self.take_array(field)?))
            }
            _ => Err(self.unexpected(field, b)),
        }
    }

    /// Reads a map header and returns its entry count.
    pub(crate) fn read_map_len(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.peek(field)?;
        match b {
            0x80..=0x8f => {
                self.pos += 1;
                Ok((b & 0x0f) as u32)
            }
            MAP16 => {
                self.pos += 1;
                Ok(u16::from_be_bytes(self.take_array(field)?) as u32)
            }
            MAP32 => {
                self.pos += 1;
                Ok(u32::from_be_bytes(self.take_array(field)?))
            }
            _ => Err(self.unexpected(field, b)),
        }
    }

    /// Reads a `bin` object and returns the byte range of its contents in the input.
    pub(crate) fn read_bin_range(
        &mut self,
        field: &'static str,
    ) -> Result<std::ops::Range<usize>, DecodeError> {
        let b = self.peek(field)?;
        let len = match b {
            BIN8 => {
                self.pos += 1;
                self.take_array::<1>(field)?[0] as usize
            }
            BIN16 => {
                self.pos += 1;
                u16::from_be_bytes(self.take_array(field)?) as usize
            }
            BIN32 => {
                self.pos += 1;
                u32::from_be_bytes(self.take_array(field)?) as usize
            }
            _ => return Err(self.unexpected(field, b)),
        };
        let start = self.pos;
        self.take(len, field)?;
        Ok(start..start + len)
    }

    /// Reads a `bin` object and returns its contents.
    pub(crate) fn read_bin(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let r = self.read_bin_range(field)?;
        Ok(&self.buf[r])
    }

    fn read_str_len(&mut self, field: &'static str) -> Result<Option<usize>, DecodeError> {
        let b = self.peek(field)?;
        let len = match b {
            0xa0..=0xbf => {
                self.pos += 1;
                (b & 0x1f) as usize
            }
            STR8 => {
                self.pos += 1;
                self.take_array::<1>(field)?[0] as usize
            }
            STR16 => {
                self.pos += 1;
                u16::from_be_bytes(self.take_array(field)?) as usize
            }
            STR32 => {
                self.pos += 1;
                u32::from_be_bytes(self.take_array(field)?) as usize
            }
            _ => return Ok(None),
        };
        Ok(Some(len))
    }

    /// Reads a msgpack `str` (a `bin` is rejected, as the protocol requires for values).
    pub(crate) fn read_str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        match self.read_str_len(field)? {
            Some(len) => {
                let bytes = self.take(len, field)?;
                std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field, at })
            }
            None => Err(self.unexpected(field, self.buf[self.pos])),
        }
    }

    /// Reads a `str` or `nil`.
    pub(crate) fn read_str_or_nil(
        &mut self,
        field: &'static str,
    ) -> Result<Option<&'a str>, DecodeError> {
        if self.peek(field)? == NIL {
            self.pos += 1;
            return Ok(None);
        }
        self.read_str(field).map(Some)
    }

    /// Reads a map key, which may be a `str` or a `bin`.
    pub(crate) fn read_key(&mut self) -> Result<&'a [u8], DecodeError> {
        const FIELD: &str = "map key";
        if let Some(len) = self.read_str_len(FIELD)? {
            return self.take(len, FIELD);
        }
        let r = self.read_bin_range(FIELD)?;
        Ok(&self.buf[r])
    }

    /// Reads a msgpack bool.
    pub(crate) fn read_bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let b = self.peek(field)?;
        let v = match b {
            TRUE => true,
            FALSE => false,
            _ => return Err(self.unexpected(field, b)),
        };
        self.pos += 1;
        Ok(v)
    }

    /// Reads an extension header: `(type, data length)`.
    pub(crate) fn read_ext_header(
        &mut self,
        field: &'static str,
    ) -> Result<(i8, usize), DecodeError> {
        let b = self.peek(field)?;
        let len = match b {
            FIXEXT1..=FIXEXT16 => {
                self.pos += 1;
                1usize << (b - FIXEXT1)
            }
            EXT8 => {
                self.pos += 1;
                self.take_array::<1>(field)?[0] as usize
            }
            EXT16 => {
                self.pos += 1;
                u16::from_be_bytes(self.take_array(field)?) as usize
            }
            EXT32 => {
                self.pos += 1;
                u32::from_be_bytes(self.take_array(field)?) as usize
            }
            _ => return Err(self.unexpected(field, b)),
        };
        let ty = self.take_array::<1>(field)?[0] as i8;
        Ok((ty, len))
    }

    /// Skips one complete msgpack object of any type.
    ///
    /// Iterative, so deeply nested input cannot overflow the stack; every pending object
    /// costs at least one input byte, so the pending count is bounded by the input.
    pub(crate) fn skip(&mut self, field: &'static str) -> Result<(), DecodeError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            if pending > self.remaining() as u64 {
                return Err(self.truncated(field, pending as usize));
            }
            pending -= 1;
            let b = self.peek(field)?;
            self.pos += 1;
            let (data, children): (usize, u64) = match b {
                0x00..=0x7f | 0xe0..=0xff | NIL | FALSE | TRUE => (0, 0),
                0x80..=0x8f => (0, 2 * (b & 0x0f) as u64),
                0x90..=0x9f => (0, (b & 0x0f) as u64),
                0xa0..=0xbf => ((b & 0x1f) as usize, 0),
                0xc1 => {
                    return Err(DecodeError::UnexpectedType {
                        field,
                        at: self.pos - 1,
                        byte: b,
                    });
                }
                BIN8 | STR8 => (self.take_array::<1>(field)?[0] as usize, 0),
                BIN16 | STR16 => (u16::from_be_bytes(self.take_array(field)?) as usize, 0),
                BIN32 | STR32 => (u32::from_be_bytes(self.take_array(field)?) as usize, 0),
                EXT8 => (self.take_array::<1>(field)?[0] as usize + 1, 0),
                EXT16 => (u16::from_be_bytes(self.take_array(field)?) as usize + 1, 0),
                EXT32 => (u32::from_be_bytes(self.take_array(field)?) as usize + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                UINT8 | INT8 => (1, 0),
                UINT16 | INT16 => (2, 0),
                UINT32 | INT32 => (4, 0),
                UINT64 | INT64 => (8, 0),
                FIXEXT1..=FIXEXT16 => ((1usize << (b - FIXEXT1)) + 1, 0),
                ARRAY16 => (0, u16::from_be_bytes(self.take_array(field)?) as u64),
                ARRAY32 => (0, u32::from_be_bytes(self.take_array(field)?) as u64),
                MAP16 => (0, 2 * u16::from_be_bytes(self.take_array(field)?) as u64),
                MAP32 => (0, 2 * u32::from_be_bytes(self.take_array(field)?) as u64),
            };
            self.take(data, field)?;
            pending += children;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded_uint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, v);
        assert_eq!(out.len(), uint_len(v));
        out
    }

    #[test]
    fn uint_uses_the_smallest_form() {
        assert_eq!(encoded_uint(0), [0x00]);
        assert_eq!(encoded_uint(127), [0x7f]);
        assert_eq!(encoded_uint(128), [0xcc, 0x80]);
        assert_eq!(encoded_uint(255), [0xcc, 0xff]);
        assert_eq!(encoded_uint(256), [0xcd, 0x01, 0x00]);
        assert_eq!(encoded_uint(65535), [0xcd, 0xff, 0xff]);
        assert_eq!(encoded_uint(65536), [0xce, 0, 1, 0, 0]);
        assert_eq!(
            encoded_uint(u32::MAX as u64),
            [0xce, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(encoded_uint(1 << 32), [0xcf, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn uint_reads_every_non_negative_form() {
        let cases: &[(&[u8], u64)] = &[
            (&[0x05], 5),
            (&[0xcc, 0x05], 5),
            (&[0xcd, 0x00, 0x05], 5),
            (&[0xce, 0, 0, 0, 5], 5),
            (&[0xcf, 0, 0, 0, 0, 0, 0, 0, 5], 5),
            (&[0xd0, 0x05], 5),
            (&[0xd1, 0x00, 0x05], 5),
            (&[0xd2, 0, 0, 0, 5], 5),
            (&[0xd3, 0, 0, 0, 0, 0, 0, 0, 5], 5),
        ];
        for (bytes, want) in cases {
            let mut r = Reader::new(bytes);
            assert_eq!(r.read_uint("x").unwrap(), *want, "{bytes:02x?}");
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn negative_and_overflowing_ints_are_errors() {
        for bytes in [
            &[0xff][..],
            &[0xd0, 0xff],
            &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let err = Reader::new(bytes).read_uint("x").unwrap_err();
            assert!(matches!(err, DecodeError::Negative { .. }), "{err}");
        }
        let err = Reader::new(&[0xcd, 0x01, 0x00])
            .read_uint_max("x", 255)
            .unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Overflow {
                    value: 256,
                    max: 255,
                    ..
                }
            ),
            "{err}"
        );
        let err = Reader::new(&[0xc0]).read_uint("x").unwrap_err();
        assert!(
            matches!(err, DecodeError::UnexpectedType { byte: 0xc0, .. }),
            "{err}"
        );
    }

    #[test]
    fn skip_walks_nested_values_and_rejects_short_input() {
        // {"a": [1, "xy", {"k": nil}], "b": ext8}
        let bytes = [
            0x82, 0xa1, b'a', 0x93, 0x01, 0xa2, b'x', b'y', 0x81, 0xa1, b'k', 0xc0, 0xa1, b'b',
            0xc7, 0x01, 0x05, 0x00, 0x2a,
        ];
        let mut r = Reader::new(&bytes);
        r.skip("v").unwrap();
        assert_eq!(r.pos(), bytes.len() - 1);
        for cut in 0..bytes.len() - 1 {
            assert!(Reader::new(&bytes[..cut]).skip("v").is_err(), "cut {cut}");
        }
        // A huge declared array is rejected before walking it.
        let err = Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff])
            .skip("v")
            .unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
    }

    /// A msgpack value for the reader's property tests; `wide` picks a header wider
    /// than needed (msgpack allows any form that holds the length).
    #[derive(Clone, Debug)]
    enum V {
        Nil,
        Bool(bool),
        Uint(u64, bool),
        Int(i64),
        F32,
        F64,
        Str(String, u8),
        Bin(Vec<u8>, u8),
        Ext(usize, u8),
        Array(Vec<V>, u8),
        Map(Vec<(V, V)>, u8),
    }

    /// The header of a length-prefixed object: the smallest form whose width is at
    /// least the `wide`th (0: smallest), fix forms only where `fix` is given.
    fn header(out: &mut Vec<u8>, len: usize, wide: u8, fix: Option<(u8, usize)>, forms: [u8; 3]) {
        let need = match (fix, len) {
            (Some((_, max)), l) if l <= max => 0,
            (_, l) if l <= 0xff && forms[0] != 0 => 1,
            (_, l) if l <= 0xffff => 2,
            _ => 3,
        };
        match need.max(wide.min(3) as usize) {
            0 => out.push(fix.unwrap().0 | len as u8),
            1 if forms[0] != 0 => out.extend([forms[0], len as u8]),
            1 | 2 => {
                out.push(forms[1]);
                out.extend((len as u16).to_be_bytes());
            }
            _ => {
                out.push(forms[2]);
                out.extend((len as u32).to_be_bytes());
            }
        }
    }

    fn enc(v: &V, out: &mut Vec<u8>) {
        match v {
            V::Nil => out.push(NIL),
            V::Bool(b) => put_bool(out, *b),
            V::Uint(u, false) => put_uint(out, *u),
            V::Uint(u, true) => {
                out.push(UINT64);
                out.extend(u.to_be_bytes());
            }
            V::Int(i) => match *i {
                -32..=-1 => out.push(*i as u8),
                -128..=127 => out.extend([INT8, *i as u8]),
                -32768..=32767 => {
                    out.push(INT16);
                    out.extend((*i as i16).to_be_bytes());
                }
                -2147483648..=2147483647 => {
                    out.push(INT32);
                    out.extend((*i as i32).to_be_bytes());
                }
                _ => {
                    out.push(INT64);
                    out.extend(i.to_be_bytes());
                }
            },
            V::F32 => out.extend([0xca, 0, 0, 0, 0]),
            V::F64 => out.extend([0xcb, 0, 0, 0, 0, 0, 0, 0, 0]),
            V::Str(t, w) => {
                header(out, t.len(), *w, Some((0xa0, 31)), [STR8, STR16, STR32]);
                out.extend(t.as_bytes());
            }
            V::Bin(b, w) => {
                header(out, b.len(), *w, None, [BIN8, BIN16, BIN32]);
                out.extend(b);
            }
            V::Ext(len, w) => {
                match (*len, *w) {
                    (1 | 2 | 4 | 8 | 16, 0) => out.push(FIXEXT1 + len.trailing_zeros() as u8),
                    _ => header(out, *len, *w, None, [EXT8, EXT16, EXT32]),
                }
                out.push(5); // the type
                out.extend(std::iter::repeat_n(0xee, *len));
            }
            V::Array(items, w) => {
                header(
                    out,
                    items.len(),
                    *w,
                    Some((0x90, 15)),
                    [0, ARRAY16, ARRAY32],
                );
                items.iter().for_each(|i| enc(i, out));
            }
            V::Map(entries, w) => {
                header(out, entries.len(), *w, Some((0x80, 15)), [0, MAP16, MAP32]);
                for (k, v) in entries {
                    enc(k, out);
                    enc(v, out);
                }
            }
        }
    }

    fn value() -> impl Strategy<Value = V> {
        let len = prop_oneof![0usize..40, 250usize..260, Just(65_535), Just(65_536)];
        let leaf = prop_oneof![
            Just(V::Nil),
            any::<bool>().prop_map(V::Bool),
            (any::<u64>(), any::<bool>()).prop_map(|(u, w)| V::Uint(u, w)),
            any::<i64>().prop_map(V::Int),
            (-200i64..200).prop_map(V::Int),
            Just(V::F32),
            Just(V::F64),
            (len.clone(), 0u8..4)
                .prop_map(|(n, w)| V::Str("é".repeat(n / 2) + &"x".repeat(n % 2), w)),
            (len, 0u8..4).prop_map(|(n, w)| V::Bin(vec![7; n], w)),
            (
                prop_oneof![
                    Just(1usize),
                    Just(2),
                    Just(4),
                    Just(8),
                    Just(16),
                    0usize..300
                ],
                0u8..4
            )
                .prop_map(|(n, w)| V::Ext(n, w)),
        ];
        leaf.prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                (proptest::collection::vec(inner.clone(), 0..6), 0u8..4)
                    .prop_map(|(v, w)| V::Array(v, w)),
                (
                    proptest::collection::vec((inner.clone(), inner), 0..4),
                    0u8..4
                )
                    .prop_map(|(v, w)| V::Map(v, w)),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `skip` steps over exactly one value of any form, and stops short of a cut one.
        #[test]
        fn skip_steps_over_exactly_one_value_of_any_form(v in value()) {
            let mut bytes = Vec::new();
            enc(&v, &mut bytes);
            let len = bytes.len();
            bytes.push(0x2a); // the next value
            let mut r = Reader::new(&bytes);
            r.skip("v").unwrap();
            prop_assert_eq!(r.pos(), len);
            for cut in [0, len / 2, len - 1] {
                prop_assert!(Reader::new(&bytes[..cut]).skip("v").is_err(), "cut {}", cut);
            }
        }

        /// Strings, bins and headers read back from every form that holds them.
        #[test]
        fn every_form_of_a_str_bin_array_or_map_reads_back(v in value()) {
            let mut bytes = Vec::new();
            enc(&v, &mut bytes);
            let mut r = Reader::new(&bytes);
            match &v {
                V::Str(t, _) => prop_assert_eq!(r.read_str("s").unwrap(), t.as_str()),
                V::Bin(b, _) => prop_assert_eq!(r.read_bin("b").unwrap(), &b[..]),
                V::Array(items, _) => {
                    prop_assert_eq!(r.read_array_len("a").unwrap() as usize, items.len())
                }
                V::Map(entries, _) => {
                    prop_assert_eq!(r.read_map_len("m").unwrap() as usize, entries.len())
                }
                _ => return Ok(()),
            }
            if !matches!(v, V::Array(..) | V::Map(..)) {
                prop_assert_eq!(r.remaining(), 0);
            }
        }
    }

    #[test]
    fn put_str_writes_the_smallest_form_at_every_boundary() {
        for (len, head) in [
            (0, vec![0xa0]),
            (31, vec![0xbf]),
            (32, vec![STR8, 32]),
            (255, vec![STR8, 255]),
            (256, vec![STR16, 1, 0]),
            (65_535, vec![STR16, 0xff, 0xff]),
            (65_536, vec![STR32, 0, 1, 0, 0]),
        ] {
            let s = "s".repeat(len);
            let mut out = Vec::new();
            put_str(&mut out, &s);
            assert_eq!(&out[..head.len()], &head[..], "{len}");
            assert_eq!(out.len(), head.len() + len);
            let mut r = Reader::new(&out);
            assert_eq!(r.read_str("s").unwrap(), s);
            assert_eq!(r.remaining(), 0);
        }
    }
}
