//! The control payloads: msgpack maps with fixed key spellings (`PROTOCOL.md` §3.3).
//!
//! Writers emit the keys in the protocol's order with the smallest forms; readers accept
//! keys in any order, as `str` or `bin`, skip unknown keys and leave missing ones at
//! their zero values.

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;
use super::msgpack::{self, Reader};

/// A point in time as the protocol carries it: Unix seconds (may be negative) and
/// nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Time {
    /// The zero time of Go (`0001-01-01T00:00:00Z`), which appears in mux pongs.
    pub const GO_ZERO: Time = Time {
        secs: -62_135_596_800,
        nanos: 0,
    };

    /// The time as nanoseconds since the Unix epoch.
    pub fn as_unix_nanos(self) -> i128 {
        self.secs as i128 * 1_000_000_000 + self.nanos as i128
    }

    /// A time from nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(n: i128) -> Time {
        Time {
            secs: n.div_euclid(1_000_000_000) as i64,
            nanos: n.rem_euclid(1_000_000_000) as u32,
        }
    }

    /// Appends the time as msgpack extension 5 (`c7 0c 05`, seconds then nanos).
    pub fn encode(self, out: &mut impl BufMut) {
        out.put_slice(&[msgpack::EXT8, 12, 5]);
        out.put_i64(self.secs);
        out.put_u32(self.nanos);
    }

    /// Reads a time in extension 5 or in the standard timestamp extension -1.
    pub(crate) fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Time, DecodeError> {
        let at = r.pos();
        let (ty, len) = r.read_ext_header(field)?;
        let data = r.take(len, field)?;
        let bad = |reason: &'static str| DecodeError::InvalidValue { field, at, reason };
        let too_many_nanos = |nanos: u32| {
            if nanos > 999_999_999 {
                Err(bad("nanoseconds above 999999999"))
            } else {
                Ok(())
            }
        };
        match (ty, len) {
            (5, 12) => Ok(Time {
                secs: i64::from_be_bytes(data[..8].try_into().expect("8 bytes")),
                nanos: u32::from_be_bytes(data[8..].try_into().expect("4 bytes")),
            }),
            (5, _) => Err(bad("time extension 5 must hold 12 bytes")),
            (-1, 4) => Ok(Time {
                secs: u32::from_be_bytes(data.try_into().expect("4 bytes")) as i64,
                nanos: 0,
            }),
            (-1, 8) => {
                let v = u64::from_be_bytes(data.try_into().expect("8 bytes"));
                let nanos = (v >> 34) as u32;
                too_many_nanos(nanos)?;
                Ok(Time {
                    secs: (v & ((1 << 34) - 1)) as i64,
                    nanos,
                })
            }
            (-1, 12) => {
                let nanos = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
                too_many_nanos(nanos)?;
                Ok(Time {
                    secs: i64::from_be_bytes(data[4..].try_into().expect("8 bytes")),
                    nanos,
                })
            }
            (-1, _) => Err(bad("timestamp extension must hold 4, 8 or 12 bytes")),
            _ => Err(bad("not a time extension")),
        }
    }
}

/// Reads a map payload: calls `entry` for every key, which must consume the value (or
/// return `false` to have it skipped).
fn read_map(
    payload: &[u8],
    what: &'static str,
    mut entry: impl FnMut(&[u8], &mut Reader<'_>) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(payload);
    let n = r.read_map_len(what)?;
    for _ in 0..n {
        let key = r.read_key()?;
        if !entry(key, &mut r)? {
            r.skip(what)?;
        }
    }
    Ok(())
}

fn read_id(r: &mut Reader<'_>) -> Result<[u8; 16], DecodeError> {
    let at = r.pos();
    r.read_bin("ID")?
        .try_into()
        .map_err(|_| DecodeError::InvalidValue {
            field: "ID",
            at,
            reason: "ID must be 16 bytes",
        })
}

/// The dialer's first message (op Connect).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The sender manager's random ID, new per process start.
    pub id: [u8; 16],
    /// The sender's own host string.
    pub host: String,
    /// The sender's clock when it sent the request.
    pub time: Time,
    /// The authentication token.
    pub token: String,
}

impl ConnectRequest {
    /// Appends the msgpack map.
    pub fn encode(&self, out: &mut impl BufMut) {
        msgpack::put_map_header(out, 4);
        msgpack::put_str(out, "ID");
        msgpack::put_bin_header(out, 16);
        out.put_slice(&self.id);
        msgpack::put_str(out, "Host");
        msgpack::put_str(out, &self.host);
        msgpack::put_str(out, "Time");
        self.time.encode(out);
        msgpack::put_str(out, "Token");
        msgpack::put_str(out, &self.token);
    }

    /// Decodes the msgpack map.
    pub fn decode(payload: &[u8]) -> Result<ConnectRequest, DecodeError> {
        let mut v = ConnectRequest::default();
        read_map(payload, "connect request", |k, r| {
            match k {
                b"ID" => v.id = read_id(r)?,
                b"Host" => v.host = r.read_str("Host")?.to_owned(),
                b"Time" => v.time = Time::read(r, "Time")?,
                b"Token" => v.token = r.read_str("Token")?.to_owned(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(v)
    }
}

/// The acceptor's answer (op ConnectResponse).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectResponse {
    /// The responder manager's random ID (also sent on rejection).
    pub id: [u8; 16],
    /// Whether the connection was accepted.
    pub accepted: bool,
    /// Why it was rejected (empty when accepted).
    pub rejected_reason: String,
}

impl ConnectResponse {
    /// Appends the msgpack map.
    pub fn encode(&self, out: &mut impl BufMut) {
        msgpack::put_map_header(out, 3);
        msgpack::put_str(out, "ID");
        msgpack::put_bin_header(out, 16);
        out.put_slice(&self.id);
        msgpack::put_str(out, "Accepted");
        msgpack::put_bool(out, self.accepted);
        msgpack::put_str(out, "RejectedReason");
        msgpack::put_str(out, &self.rejected_reason);
    }

    /// Decodes the msgpack map.
    pub fn decode(payload: &[u8]) -> Result<ConnectResponse, DecodeError> {
        let mut v = ConnectResponse::default();
        read_map(payload, "connect response", |k, r| {
            match k {
                b"ID" => v.id = read_id(r)?,
                b"Accepted" => v.accepted = r.read_bool("Accepted")?,
                b"RejectedReason" => v.rejected_reason = r.read_str("RejectedReason")?.to_owned(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(v)
    }
}

/// The payload of op MuxConnectError: `{"Error": text}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MuxConnectError {
    /// Why the mux was refused.
    pub error: String,
}

impl MuxConnectError {
    /// Appends the msgpack map.
    pub fn encode(&self, out: &mut impl BufMut) {
        msgpack::put_map_header(out, 1);
        msgpack::put_str(out, "Error");
        msgpack::put_str(out, &self.error);
    }

    /// Decodes the msgpack map.
    pub fn decode(payload: &[u8]) -> Result<MuxConnectError, DecodeError> {
        let mut v = MuxConnectError::default();
        read_map(payload, "mux connect error", |k, r| {
            match k {
                b"Error" => v.error = r.read_str("Error")?.to_owned(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(v)
    }
}

/// The payload of a connection ping: `{"t": time}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ping {
    /// The sender's clock.
    pub t: Time,
}

impl Ping {
    /// Appends the msgpack map.
    pub fn encode(&self, out: &mut impl BufMut) {
        msgpack::put_map_header(out, 1);
        msgpack::put_str(out, "t");
        self.t.encode(out);
    }

    /// Decodes the msgpack map.
    pub fn decode(payload: &[u8]) -> Result<Ping, DecodeError> {
        let mut v = Ping::default();
        read_map(payload, "ping", |k, r| {
            match k {
                b"t" => v.t = Time::read(r, "t")?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(v)
    }
}

/// The payload of a pong: `{"nf": bool, "e": str or nil, "t": time}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pong {
    /// The pinged mux is not known.
    pub not_found: bool,
    /// The pinged mux has ended with this error.
    pub err: Option<String>,
    /// The `t` of the ping answered.
    pub t: Time,
}

impl Pong {
    /// Appends the msgpack map.
    pub fn encode(&self, out: &mut impl BufMut) {
        msgpack::put_map_header(out, 3);
        msgpack::put_str(out, "nf");
        msgpack::put_bool(out, self.not_found);
        msgpack::put_str(out, "e");
        match &self.err {
            Some(e) => msgpack::put_str(out, e),
            None => out.put_u8(msgpack::NIL),
        }
        msgpack::put_str(out, "t");
        self.t.encode(out);
    }

    /// Decodes the msgpack map.
    pub fn decode(payload: &[u8]) -> Result<Pong, DecodeError> {
        let mut v = Pong::default();
        read_map(payload, "pong", |k, r| {
            match k {
                b"nf" => v.not_found = r.read_bool("nf")?,
                b"e" => v.err = r.read_str_or_nil("e")?.map(str::to_owned),
                b"t" => v.t = Time::read(r, "t")?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(v)
    }
}

/// Encodes a control payload into a fresh buffer.
pub fn to_payload(encode: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    encode(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v);
        v
    }

    #[test]
    fn go_zero_time_has_the_documented_bytes() {
        let b = bytes_of(|o| Time::GO_ZERO.encode(o));
        assert_eq!(
            b,
            [
                0xc7, 0x0c, 0x05, 0xff, 0xff, 0xff, 0xf1, 0x88, 0x6e, 0x09, 0x00, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            Time::read(&mut Reader::new(&b), "t").unwrap(),
            Time::GO_ZERO
        );
    }

    #[test]
    fn time_accepts_the_standard_timestamp_forms() {
        let t = |b: &[u8]| Time::read(&mut Reader::new(b), "t");
        assert_eq!(
            t(&[0xd6, 0xff, 0, 0, 0, 7]).unwrap(),
            Time { secs: 7, nanos: 0 }
        );
        let v: u64 = (5u64 << 34) | 9;
        let mut b8 = vec![0xd7, 0xff];
        b8.extend_from_slice(&v.to_be_bytes());
        assert_eq!(t(&b8).unwrap(), Time { secs: 9, nanos: 5 });
        let mut b12 = vec![0xc7, 12, 0xff];
        b12.extend_from_slice(&6u32.to_be_bytes());
        b12.extend_from_slice(&(-3i64).to_be_bytes());
        assert_eq!(t(&b12).unwrap(), Time { secs: -3, nanos: 6 });
        let mut bad = vec![0xc7, 12, 0xff];
        bad.extend_from_slice(&1_000_000_000u32.to_be_bytes());
        bad.extend_from_slice(&0i64.to_be_bytes());
        assert!(t(&bad).is_err());
        assert!(
            t(&[0xd7, 0x05, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
            "type 5 needs 12 bytes"
        );
        assert!(
            t(&[0xd6, 0x07, 0, 0, 0, 0]).is_err(),
            "unknown extension type"
        );
    }

    #[test]
    fn time_nanos_roundtrip() {
        for n in [
            0i128,
            1,
            -1,
            1_700_000_000_123_456_789,
            -62_135_596_800_000_000_000,
        ] {
            assert_eq!(Time::from_unix_nanos(n).as_unix_nanos(), n);
        }
        assert_eq!(
            Time::from_unix_nanos(-1),
            Time {
                secs: -1,
                nanos: 999_999_999
            }
        );
    }

    #[test]
    fn connect_request_bytes_and_roundtrip() {
        let req = ConnectRequest {
            id: [7; 16],
            host: "http://a:9000".into(),
            time: Time { secs: 1, nanos: 2 },
            token: "tok".into(),
        };
        let b = bytes_of(|o| req.encode(o));
        let mut want = vec![0x84, 0xa2, b'I', b'D', 0xc4, 16];
        want.extend_from_slice(&[7; 16]);
        want.extend_from_slice(&[0xa4, b'H', b'o', b's', b't', 0xad]);
        want.extend_from_slice(b"http://a:9000");
        want.extend_from_slice(&[0xa4, b'T', b'i', b'm', b'e', 0xc7, 0x0c, 0x05]);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
        want.extend_from_slice(&[0xa5, b'T', b'o', b'k', b'e', b'n', 0xa3, b't', b'o', b'k']);
        assert_eq!(b, want);
        assert_eq!(ConnectRequest::decode(&b).unwrap(), req);
    }

    #[test]
    fn maps_accept_any_order_bin_keys_and_unknown_keys() {
        // {"Accepted": true, bin "X": [1, 2], bin "ID": bin16}
        let mut b = vec![0x83, 0xa8];
        b.extend_from_slice(b"Accepted");
        b.push(0xc3);
        b.extend_from_slice(&[0xc4, 1, b'X', 0x92, 1, 2]);
        b.extend_from_slice(&[0xc4, 2, b'I', b'D', 0xc4, 16]);
        b.extend_from_slice(&[9; 16]);
        let r = ConnectResponse::decode(&b).unwrap();
        assert_eq!(
            r,
            ConnectResponse {
                id: [9; 16],
                accepted: true,
                rejected_reason: String::new()
            }
        );
    }

    #[test]
    fn values_must_have_the_right_type() {
        // Host as bin is an error.
        let b = [0x81, 0xa4, b'H', b'o', b's', b't', 0xc4, 1, b'x'];
        assert!(ConnectRequest::decode(&b).is_err());
        // ID of 15 bytes is an error.
        let mut b = vec![0x81, 0xa2, b'I', b'D', 0xc4, 15];
        b.extend_from_slice(&[0; 15]);
        assert!(ConnectRequest::decode(&b).is_err());
        // nil is accepted for "e" only.
        let b = [0x81, 0xa5, b'E', b'r', b'r', b'o', b'r', 0xc0];
        assert!(MuxConnectError::decode(&b).is_err());
    }

    #[test]
    fn pong_bytes_and_roundtrip() {
        let p = Pong {
            not_found: false,
            err: None,
            t: Time::GO_ZERO,
        };
        let b = bytes_of(|o| p.encode(o));
        assert_eq!(&b[..8], &[0x83, 0xa2, b'n', b'f', 0xc2, 0xa1, b'e', 0xc0]);
        assert_eq!(Pong::decode(&b).unwrap(), p);
        let p = Pong {
            not_found: true,
            err: Some("context canceled".into()),
            t: Time { secs: 5, nanos: 6 },
        };
        assert_eq!(Pong::decode(&bytes_of(|o| p.encode(o))).unwrap(), p);
    }

    #[test]
    fn ping_and_mux_error_roundtrip() {
        let p = Ping {
            t: Time {
                secs: 1_700_000_000,
                nanos: 42,
            },
        };
        let b = bytes_of(|o| p.encode(o));
        assert_eq!(&b[..3], &[0x81, 0xa1, b't']);
        assert_eq!(Ping::decode(&b).unwrap(), p);
        let e = MuxConnectError {
            error: "Invalid Handler".into(),
        };
        let b = bytes_of(|o| e.encode(o));
        assert_eq!(&b[..7], &[0x81, 0xa5, b'E', b'r', b'r', b'o', b'r']);
        assert_eq!(MuxConnectError::decode(&b).unwrap(), e);
    }
}
