//! The logic of the `gridwire` inspector: grid frames to JSON and back.
//!
//! ```text
//! gridwire decode [--allow-bad-crc] HEX|-
//! gridwire encode JSON|-
//! ```
//!
//! `decode` reads one WebSocket message (one frame or an `OpMerged` container) written
//! in hex and prints one line of JSON; `encode` reads that JSON and prints the message in
//! hex. `-` reads the argument from standard input instead (surrounding whitespace is
//! trimmed), which is needed for messages too long for a command line.
//!
//! # JSON
//!
//! A frame is an object with the integer fields `mux_id`, `seq`, `deadline_ms`,
//! `handler`, `op` and `flags`, the payload as lowercase hex in `payload` (`""` when it
//! is empty, whether absent or present-and-empty: the difference is the
//! `PAYLOAD_IS_ZERO` flag) and the subroute trailer as hex in `subroute` (`null` when
//! there is none). `decode` adds facts derived from those:
//!
//! - `op_name` (`"Request"`, `"Op(99)"` for values the protocol does not define),
//! - `flag_names` (`["CRC", "EOF"]`; unknown bits as one hex string such as `"0xc0"`),
//! - `payload_present`: whether the protocol considers the payload present (it is
//!   absent when empty without `PAYLOAD_IS_ZERO`),
//! - `crc_ok`: `null` without the CRC flag, otherwise `true`; `false` only with
//!   `--allow-bad-crc`, since a mismatch is otherwise an error,
//! - `control`: for the ops whose payload is a msgpack map (`Connect`,
//!   `ConnectResponse`, `MuxConnectError`, `Ping` on mux 0 and `Pong`), the decoded map,
//!   or `control_error` when the payload does not decode as one,
//! - for an `OpMerged` container (op 17), `frames`: its inner frames, each an object as
//!   above.
//!
//! `encode` takes the same objects: it requires the six integer fields (each within
//! its wire width), defaults `payload` to `""` and `subroute` to `null`, and ignores the
//! derived keys. The trailers follow the flags: the CRC is computed and appended when
//! the CRC bit (0x01) is set, and the subroute is appended when the subroute bit (0x20)
//! is set. The subroute bit and the `subroute` key must agree: a bit without a subroute,
//! or a subroute without the bit, is an error rather than a guess.
//!
//! A container is encoded the one way the protocol writes it: the header has `mux_id`,
//! `deadline_ms`, `handler` and `flags` zero, an empty payload, no subroute, and `seq`
//! equal to the number of `frames`; anything else is an error. Inner frames may not be
//! containers.
//!
//! Every conformant message decodes and encodes back to the same bytes. (Messages that
//! decode but are not conformant, such as integers in larger forms than needed, encode
//! to their canonical form.)
//!
//! # Exit status
//!
//! 0 on success; 1 for invalid input (bad hex or JSON, a frame that does not decode, a
//! value out of range, ...) with a one-line reason such as
//! `gridwire: decode: crc mismatch: ...` on standard error; 2 for a wrong command line.

use std::fmt;
use std::io::Read;

use bytes::Bytes;
use grid_core::codec::{
    self, ConnectRequest, ConnectResponse, DecodeError, Flags, Frame, Message, MuxConnectError, Op,
    Ping, Pong, SubrouteId, Time,
};
use serde_json::{Map, Value, json};

/// The command-line synopsis.
pub const USAGE: &str =
    "usage: gridwire decode [--allow-bad-crc] HEX|-  |  gridwire encode JSON|-  (- reads stdin)";

/// Exit status for invalid input.
pub const EXIT_INVALID: u8 = 1;
/// Exit status for a wrong command line.
pub const EXIT_USAGE: u8 = 2;

/// Why `gridwire` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The command line is wrong.
    Usage(String),
    /// The input is invalid.
    Invalid {
        /// The subcommand that failed (`decode` or `encode`).
        command: &'static str,
        /// Why, on one line.
        reason: String,
    },
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Invalid { .. } => EXIT_INVALID,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always one line, whatever the underlying messages contain.
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Error::Usage(msg) => write!(f, "gridwire: {}; {USAGE}", one_line(msg)),
            Error::Invalid { command, reason } => {
                write!(f, "gridwire: {command}: {}", one_line(reason))
            }
        }
    }
}

impl std::error::Error for Error {}

/// Runs `gridwire` with `args` (without the program name), reading `-` arguments from
/// `stdin`. Returns the line to print (without its newline).
pub fn run(args: &[String], stdin: &mut dyn Read) -> Result<String, Error> {
    let usage = |msg: &str| Error::Usage(msg.to_owned());
    let (command, rest) = match args.split_first() {
        None => return Err(usage("missing command")),
        Some((c, rest)) => (c.as_str(), rest),
    };
    match command {
        "-h" | "--help" | "help" => Ok(USAGE.to_owned()),
        "decode" => {
            let mut allow_bad_crc = false;
            let mut input = None;
            for a in rest {
                match a.as_str() {
                    "--allow-bad-crc" => allow_bad_crc = true,
                    s if s.starts_with("--") => {
                        return Err(usage(&format!("unknown option {s:?}")));
                    }
                    s if input.is_none() => input = Some(s),
                    _ => return Err(usage("decode takes one argument")),
                }
            }
            let input = input.ok_or_else(|| usage("decode needs a HEX argument"))?;
            let invalid = |reason: String| Error::Invalid {
                command: "decode",
                reason,
            };
            let text = read_arg(input, stdin).map_err(invalid)?;
            let bytes = from_hex(&text).map_err(|e| invalid(format!("invalid hex: {e}")))?;
            let value = decode_message(&bytes, allow_bad_crc).map_err(invalid)?;
            Ok(value.to_string())
        }
        "encode" => {
            let [input] = rest else {
                return Err(usage("encode takes one argument"));
            };
            let invalid = |reason: String| Error::Invalid {
                command: "encode",
                reason,
            };
            let text = read_arg(input, stdin).map_err(invalid)?;
            let value: Value =
                serde_json::from_str(&text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
            Ok(to_hex(&encode_message(&value).map_err(invalid)?))
        }
        other => Err(usage(&format!("unknown command {other:?}"))),
    }
}

/// The argument itself, or standard input (trimmed) for `-`.
fn read_arg(arg: &str, stdin: &mut dyn Read) -> Result<String, String> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    let mut s = String::new();
    stdin
        .read_to_string(&mut s)
        .map_err(|e| format!("reading standard input: {e}"))?;
    Ok(s.trim().to_owned())
}

// ---------------------------------------------------------------------------------------
// Hex
// ---------------------------------------------------------------------------------------

/// Lowercase hex, two digits per byte, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex digits (either case) into bytes.
///
/// Whitespace is allowed between bytes, so `97 01 00` and `970100` are the same, but not
/// inside one (`9 7` is an error): every run of digits must have an even length.
pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut high: Option<u8> = None;
    for (i, c) in s.bytes().enumerate() {
        if c.is_ascii_whitespace() {
            if high.is_some() {
                return Err(format!("odd number of hex digits before offset {i}"));
            }
            continue;
        }
        let Some(d) = digit(c) else {
            let ch = s[i..].chars().next().unwrap_or('?');
            return Err(format!("invalid hex character {ch:?} at offset {i}"));
        };
        match high.take() {
            None => high = Some(d),
            Some(h) => out.push(h << 4 | d),
        }
    }
    if high.is_some() {
        return Err("odd number of hex digits".to_owned());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// A fully decoded message.
enum Decoded {
    Frame(Frame),
    Merged { header: Frame, frames: Vec<Frame> },
}

/// Where a decode error happened: in the message itself (`None`) or in inner frame `i`.
type Located = (Option<usize>, DecodeError);

fn decode_all(message: &Bytes) -> Result<Decoded, Located> {
    match codec::decode(message, usize::MAX).map_err(|e| (None, e))? {
        Message::Frame(f) => Ok(Decoded::Frame(f)),
        Message::Merged(m) => {
            let header = m.header().clone();
            let mut frames = Vec::with_capacity(m.declared().min(1024) as usize);
            for (i, r) in m.enumerate() {
                match r {
                    Ok(f) => frames.push(f),
                    // A count mismatch concerns the container, not frame `i`.
                    Err(e @ DecodeError::MergedCount { .. }) => return Err((None, e)),
                    Err(e) => return Err((Some(i), e)),
                }
            }
            Ok(Decoded::Merged { header, frames })
        }
    }
}

/// Decodes one message into its JSON object.
///
/// With `allow_bad_crc`, a CRC that does not match is reported as `"crc_ok": false`
/// instead of failing (every other error still fails).
pub fn decode_message(bytes: &[u8], allow_bad_crc: bool) -> Result<Value, String> {
    let mut buf = bytes.to_vec();
    let mut bad_header = false;
    let mut bad_inner: Vec<usize> = Vec::new();
    // Each pass either succeeds or repairs one CRC, so passes are bounded by the
    // number of CRCs the message can hold.
    for _ in 0..=buf.len() / codec::CRC_LEN + 1 {
        match decode_all(&Bytes::from(buf.clone())) {
            Ok(Decoded::Frame(f)) => return Ok(Value::Object(frame_json(&f, !bad_header))),
            Ok(Decoded::Merged { header, frames }) => {
                let mut obj = frame_json(&header, !bad_header);
                let inner = frames
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Value::Object(frame_json(f, !bad_inner.contains(&i))))
                    .collect();
                obj.insert("frames".into(), Value::Array(inner));
                return Ok(Value::Object(obj));
            }
            Err((at_frame, DecodeError::CrcMismatch { at, computed, .. })) if allow_bad_crc => {
                buf[at..at + codec::CRC_LEN].copy_from_slice(&computed.to_le_bytes());
                match at_frame {
                    None => bad_header = true,
                    Some(i) => bad_inner.push(i),
                }
            }
            Err((None, e)) => return Err(e.to_string()),
            Err((Some(i), e)) => return Err(format!("frames[{i}]: {e}")),
        }
    }
    Err("CRC repair did not converge".to_owned())
}

/// A frame's JSON object; `crc_good` says whether its CRC (if it has one) matched.
pub fn frame_json(f: &Frame, crc_good: bool) -> Map<String, Value> {
    let flag_names: Vec<Value> = f
        .flags
        .names()
        .split('|')
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(s.to_owned()))
        .collect();
    let mut obj = Map::new();
    obj.insert("mux_id".into(), f.mux_id.into());
    obj.insert("seq".into(), f.seq.into());
    obj.insert("deadline_ms".into(), f.deadline_ms.into());
    obj.insert("handler".into(), f.handler.into());
    obj.insert("op".into(), f.op.as_u8().into());
    obj.insert("op_name".into(), f.op.name().into_owned().into());
    obj.insert("flags".into(), f.flags.0.into());
    obj.insert("flag_names".into(), flag_names.into());
    obj.insert("payload".into(), to_hex(&f.payload).into());
    obj.insert("payload_present".into(), f.payload().is_some().into());
    obj.insert(
        "subroute".into(),
        f.subroute
            .map_or(Value::Null, |s| to_hex(s.as_bytes()).into()),
    );
    obj.insert(
        "crc_ok".into(),
        if f.flags.contains(Flags::CRC) {
            crc_good.into()
        } else {
            Value::Null
        },
    );
    match control_json(f) {
        Some(Ok(v)) => {
            obj.insert("control".into(), v);
        }
        Some(Err(e)) => {
            obj.insert("control_error".into(), e.to_string().into());
        }
        None => {}
    }
    obj
}

fn time_json(t: Time) -> Value {
    json!({ "secs": t.secs, "nanos": t.nanos })
}

/// The decoded control payload of ops that carry one, `None` for the others.
fn control_json(f: &Frame) -> Option<Result<Value, DecodeError>> {
    let p = &f.payload[..];
    Some(match f.op {
        Op::Connect => ConnectRequest::decode(p).map(|c| {
            json!({
                "id": to_hex(&c.id),
                "host": c.host,
                "time": time_json(c.time),
                "token": c.token,
            })
        }),
        Op::ConnectResponse => ConnectResponse::decode(p).map(|c| {
            json!({
                "id": to_hex(&c.id),
                "accepted": c.accepted,
                "rejected_reason": c.rejected_reason,
            })
        }),
        Op::MuxConnectError => MuxConnectError::decode(p).map(|c| json!({ "error": c.error })),
        // A ping on a mux is a bare liveness ping without a payload.
        Op::Ping if f.mux_id == 0 => Ping::decode(p).map(|c| json!({ "t": time_json(c.t) })),
        Op::Pong => Pong::decode(p).map(|c| {
            json!({
                "nf": c.not_found,
                "e": c.err,
                "t": time_json(c.t),
            })
        }),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Encodes a JSON object (a frame, or a container with `frames`) into a message.
pub fn encode_message(v: &Value) -> Result<Vec<u8>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, got {}", kind(v)))?;
    let op = uint(obj, "op", u8::MAX as u64)? as u8;
    if Op::from_u8(op) != Op::Merged {
        if obj.contains_key("frames") {
            return Err(format!(
                "\"frames\" is only allowed with op 17, not op {op}"
            ));
        }
        return Ok(frame_from_json(v)?.to_bytes().to_vec());
    }
    let header = frame_from_json(v)?;
    let frames = match obj.get("frames") {
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("frames: expected an array, got {}", kind(other))),
        None => return Err("missing key \"frames\" (required with op 17)".to_owned()),
    };
    let inner = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let frame = frame_from_json(f).map_err(|e| format!("frames[{i}]: {e}"))?;
            if frame.op == Op::Merged {
                return Err(format!("frames[{i}]: containers do not nest (op 17)"));
            }
            Ok(frame)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let canonical = Frame {
        seq: u32::try_from(inner.len()).map_err(|_| "too many frames".to_owned())?,
        ..Frame::new(Op::Merged)
    };
    if header != canonical {
        return Err(format!(
            "a container's header must have seq = number of frames ({}) and mux_id, \
             deadline_ms, handler, flags zero, an empty payload and no subroute",
            inner.len()
        ));
    }
    let mut out = bytes::BytesMut::new();
    codec::encode_merged(&inner, &mut out);
    Ok(out.to_vec())
}

/// Reads one frame object (not its `frames`).
pub fn frame_from_json(v: &Value) -> Result<Frame, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, got {}", kind(v)))?;
    let flags = Flags(uint(obj, "flags", u8::MAX as u64)? as u8);
    let payload = match obj.get("payload") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => from_hex(s).map_err(|e| format!("payload: {e}"))?,
        Some(other) => {
            return Err(format!(
                "payload: expected a hex string, got {}",
                kind(other)
            ));
        }
    };
    let subroute = match obj.get("subroute") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let bytes = from_hex(s).map_err(|e| format!("subroute: {e}"))?;
            let id: [u8; codec::SUBROUTE_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                format!(
                    "subroute: expected {} bytes, got {}",
                    codec::SUBROUTE_LEN,
                    b.len()
                )
            })?;
            Some(SubrouteId::from_bytes(id))
        }
        Some(other) => {
            return Err(format!(
                "subroute: expected a hex string or null, got {}",
                kind(other)
            ));
        }
    };
    match (flags.contains(Flags::SUBROUTE), subroute.is_some()) {
        (true, false) => {
            return Err("flags has the subroute bit (0x20) but subroute is null".to_owned());
        }
        (false, true) => {
            return Err("subroute is given but flags lacks the subroute bit (0x20)".to_owned());
        }
        _ => {}
    }
    Ok(Frame {
        mux_id: uint(obj, "mux_id", u64::MAX)?,
        seq: uint(obj, "seq", u32::MAX as u64)? as u32,
        deadline_ms: uint(obj, "deadline_ms", u32::MAX as u64)? as u32,
        handler: uint(obj, "handler", u8::MAX as u64)? as u8,
        op: Op::from_u8(uint(obj, "op", u8::MAX as u64)? as u8),
        flags,
        payload: payload.into(),
        subroute,
    })
}

/// A required unsigned integer key in `0..=max`.
fn uint(obj: &Map<String, Value>, key: &str, max: u64) -> Result<u64, String> {
    let v = obj.get(key).ok_or_else(|| format!("missing key {key:?}"))?;
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(format!("{key}: expected an integer in 0..={max}, got {v}")),
    }
}

/// A short name of a JSON value's type, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST_HEX: &str = "970100cdea604e0e03c41148656c6c6f204772696420576f726c6421d8a27da3";

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn run_with(a: &[&str], stdin: &str) -> Result<String, Error> {
        run(&args(a), &mut stdin.as_bytes())
    }

    fn decoded(hex: &str) -> Value {
        decode_message(&from_hex(hex).unwrap(), false).unwrap()
    }

    fn frame(op: Op, mux_id: u64, payload: Bytes) -> Frame {
        Frame {
            mux_id,
            payload,
            ..Frame::new(op)
        }
    }

    fn payload_of(encode: impl FnOnce(&mut bytes::BytesMut)) -> Bytes {
        codec::to_payload(encode)
    }

    #[test]
    fn hex_roundtrips_and_accepts_spaces_between_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&all)).unwrap(), all);
        assert_eq!(to_hex(&[0xab, 0x01]), "ab01");
        assert_eq!(from_hex("AB 01\n\tcd").unwrap(), [0xab, 0x01, 0xcd]);
        assert_eq!(from_hex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert_eq!(from_hex("abc").unwrap_err(), "odd number of hex digits");
        assert!(from_hex("a bc").unwrap_err().contains("offset 1"));
        assert!(from_hex("zz").unwrap_err().contains("'z' at offset 0"));
        assert!(from_hex("00é0").unwrap_err().contains("'é' at offset 2"));
        assert!(from_hex("0x00").is_err());
    }

    #[test]
    fn decode_gives_every_field() {
        let v = decoded(REQUEST_HEX);
        assert_eq!(
            v,
            json!({
                "mux_id": 1, "seq": 0, "deadline_ms": 60000, "handler": 78,
                "op": 14, "op_name": "Request", "flags": 3, "flag_names": ["CRC", "EOF"],
                "payload": to_hex(b"Hello Grid World!"), "payload_present": true,
                "subroute": null, "crc_ok": true,
            })
        );
        assert_eq!(to_hex(&encode_message(&v).unwrap()), REQUEST_HEX);
    }

    #[test]
    fn crc_ok_is_null_without_the_flag_and_false_only_when_allowed() {
        let f = frame(Op::Request, 1, Bytes::new());
        assert_eq!(decoded(&to_hex(&f.to_bytes()))["crc_ok"], Value::Null);
        let mut bad = from_hex(REQUEST_HEX).unwrap();
        bad[31] ^= 1;
        let err = decode_message(&bad, false).unwrap_err();
        assert!(err.starts_with("crc mismatch: "), "{err}");
        let v = decode_message(&bad, true).unwrap();
        assert_eq!(v["crc_ok"], false);
        assert_eq!(v["payload"], to_hex(b"Hello Grid World!"));
        // Encoding it writes the right CRC.
        assert_eq!(to_hex(&encode_message(&v).unwrap()), REQUEST_HEX);
    }

    #[test]
    fn bad_inner_crcs_are_flagged_per_frame() {
        let mut good = frame(Op::Response, 2, Bytes::from_static(b"ok"));
        good.flags = Flags::CRC;
        let mut out = bytes::BytesMut::new();
        codec::encode_merged([&good, &good, &good], &mut out);
        let mut wire = out.to_vec();
        // Corrupt the CRCs of the first and the last inner frame.
        let n = wire.len();
        let inner_len = good.encoded_len();
        wire[9 + 2 + inner_len - 1] ^= 0x10;
        wire[n - 1] ^= 0x10;
        let err = decode_message(&wire, false).unwrap_err();
        assert!(err.starts_with("frames[0]: crc mismatch"), "{err}");
        let v = decode_message(&wire, true).unwrap();
        let oks: Vec<&Value> = v["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["crc_ok"])
            .collect();
        assert_eq!(oks, [&json!(false), &json!(true), &json!(false)]);
        assert_eq!(v["crc_ok"], Value::Null);
    }

    #[test]
    fn control_payloads_are_decoded() {
        let req = ConnectRequest {
            id: [0xab; 16],
            host: "http://a:9000".into(),
            time: Time {
                secs: 1_700_000_000,
                nanos: 5,
            },
            token: "tok".into(),
        };
        let v = decoded(&to_hex(
            &frame(Op::Connect, 0, payload_of(|o| req.encode(o))).to_bytes(),
        ));
        assert_eq!(
            v["control"],
            json!({
                "id": "ab".repeat(16), "host": "http://a:9000",
                "time": {"secs": 1_700_000_000, "nanos": 5}, "token": "tok",
            })
        );

        let resp = ConnectResponse {
            id: [1; 16],
            accepted: false,
            rejected_reason: "no".into(),
        };
        let v = decoded(&to_hex(
            &frame(Op::ConnectResponse, 0, payload_of(|o| resp.encode(o))).to_bytes(),
        ));
        assert_eq!(
            v["control"],
            json!({"id": "01".repeat(16), "accepted": false, "rejected_reason": "no"})
        );

        let e = MuxConnectError {
            error: "Invalid Handler".into(),
        };
        let v = decoded(&to_hex(
            &frame(Op::MuxConnectError, 4, payload_of(|o| e.encode(o))).to_bytes(),
        ));
        assert_eq!(v["control"], json!({"error": "Invalid Handler"}));

        let p = Ping {
            t: Time { secs: -1, nanos: 2 },
        };
        let v = decoded(&to_hex(
            &frame(Op::Ping, 0, payload_of(|o| p.encode(o))).to_bytes(),
        ));
        assert_eq!(v["control"], json!({"t": {"secs": -1, "nanos": 2}}));
        // A mux ping carries no map.
        let v = decoded(&to_hex(&frame(Op::Ping, 3, Bytes::new()).to_bytes()));
        assert!(
            v.get("control").is_none() && v.get("control_error").is_none(),
            "{v}"
        );

        for (err, e_json) in [
            (None, Value::Null),
            (Some("gone".to_owned()), json!("gone")),
        ] {
            let p = Pong {
                not_found: true,
                err,
                t: Time::GO_ZERO,
            };
            let v = decoded(&to_hex(
                &frame(Op::Pong, 3, payload_of(|o| p.encode(o))).to_bytes(),
            ));
            assert_eq!(
                v["control"],
                json!({"nf": true, "e": e_json, "t": {"secs": -62_135_596_800i64, "nanos": 0}})
            );
        }

        // A payload that is not the map is reported, and the frame still decodes.
        let v = decoded(&to_hex(
            &frame(Op::Pong, 3, Bytes::from_static(b"\x01")).to_bytes(),
        ));
        assert!(v["control_error"].as_str().unwrap().contains("0x01"), "{v}");
        assert!(v.get("control").is_none());
    }

    #[test]
    fn names_and_presence() {
        let mut f = frame(Op::from_u8(99), 0, Bytes::new());
        f.flags = Flags(0xd2);
        let v = decoded(&to_hex(&f.to_bytes()));
        assert_eq!(v["op_name"], "Op(99)");
        assert_eq!(v["flag_names"], json!(["EOF", "PAYLOAD_IS_ZERO", "0xc0"]));
        assert_eq!(v["payload"], "");
        assert_eq!(v["payload_present"], true);
        f.flags = Flags::NONE;
        let v = decoded(&to_hex(&f.to_bytes()));
        assert_eq!(v["flag_names"], json!([]));
        assert_eq!(v["payload_present"], false);
    }

    #[test]
    fn encode_defaults_and_ignores_derived_keys() {
        let v = json!({"mux_id": 9, "seq": 1, "deadline_ms": 0, "handler": 0, "op": 10,
                       "flags": 16, "op_name": "nonsense", "crc_ok": false, "extra": [1]});
        assert_eq!(
            to_hex(&encode_message(&v).unwrap()),
            "9709010000 0a10c400".replace(' ', "")
        );
    }

    #[test]
    fn encode_requires_subroute_consistency() {
        let sub = "4e00".to_owned() + &"11".repeat(30);
        let base = json!({"mux_id": 1, "seq": 0, "deadline_ms": 0, "handler": 78, "op": 14});
        let with = |flags: u8, subroute: Value| {
            let mut v = base.clone();
            v["flags"] = flags.into();
            v["subroute"] = subroute;
            encode_message(&v)
        };
        let wire = with(0x21, sub.clone().into()).unwrap();
        assert_eq!(decoded(&to_hex(&wire))["subroute"], sub);
        assert!(
            with(0x21, Value::Null)
                .unwrap_err()
                .contains("subroute bit")
        );
        assert!(
            with(0x01, sub.clone().into())
                .unwrap_err()
                .contains("lacks the subroute bit")
        );
        assert!(
            with(0x20, "abcd".into())
                .unwrap_err()
                .contains("expected 32 bytes, got 2")
        );
        assert!(
            with(0x20, json!(5))
                .unwrap_err()
                .contains("hex string or null")
        );
    }

    #[test]
    fn encode_rejects_bad_values() {
        let ok =
            json!({"mux_id": 1, "seq": 0, "deadline_ms": 0, "handler": 0, "op": 14, "flags": 0});
        assert!(encode_message(&ok).is_ok());
        for (key, bad) in [
            ("mux_id", json!(-1)),
            ("mux_id", json!(18_446_744_073_709_551_616.0)),
            ("seq", json!(4_294_967_296u64)),
            ("deadline_ms", json!(1.5)),
            ("handler", json!(256)),
            ("op", json!("14")),
            ("flags", json!(null)),
            ("payload", json!("abc")),
            ("payload", json!([1])),
        ] {
            let mut v = ok.clone();
            v[key] = bad.clone();
            let err = encode_message(&v).unwrap_err();
            assert!(err.starts_with(key), "{key} = {bad}: {err}");
        }
        for key in ["mux_id", "seq", "deadline_ms", "handler", "op", "flags"] {
            let mut v = ok.clone();
            v.as_object_mut().unwrap().remove(key);
            assert_eq!(
                encode_message(&v).unwrap_err(),
                format!("missing key {key:?}")
            );
        }
        assert!(
            encode_message(&json!([1]))
                .unwrap_err()
                .contains("an array")
        );
        let mut v = ok.clone();
        v["frames"] = json!([]);
        assert!(
            encode_message(&v)
                .unwrap_err()
                .contains("only allowed with op 17")
        );
    }

    #[test]
    fn containers_encode_canonically_or_not_at_all() {
        let inner =
            json!({"mux_id": 1, "seq": 0, "deadline_ms": 0, "handler": 0, "op": 14, "flags": 2});
        let header = |seq: u32| json!({"mux_id": 0, "seq": seq, "deadline_ms": 0, "handler": 0, "op": 17, "flags": 0});
        let mut v = header(2);
        v["frames"] = json!([inner.clone(), inner.clone()]);
        let wire = encode_message(&v).unwrap();
        let back = decoded(&to_hex(&wire));
        assert_eq!(back["frames"].as_array().unwrap().len(), 2);
        assert_eq!(encode_message(&back).unwrap(), wire);

        let mut wrong_count = header(3);
        wrong_count["frames"] = json!([inner.clone(), inner.clone()]);
        assert!(
            encode_message(&wrong_count)
                .unwrap_err()
                .contains("seq = number of frames (2)")
        );
        let mut with_mux = v.clone();
        with_mux["mux_id"] = 5.into();
        assert!(encode_message(&with_mux).is_err());
        let mut nested = header(1);
        nested["frames"] = json!([v.clone()]);
        assert!(
            encode_message(&nested)
                .unwrap_err()
                .starts_with("frames[0]: containers do not nest")
        );
        let mut bad_inner = header(1);
        bad_inner["frames"] = json!([{"op": 1}]);
        assert!(
            encode_message(&bad_inner)
                .unwrap_err()
                .starts_with("frames[0]: missing key")
        );
        assert!(
            encode_message(&header(0))
                .unwrap_err()
                .contains("missing key \"frames\"")
        );
    }

    #[test]
    fn command_line() {
        assert_eq!(
            run_with(&["decode", REQUEST_HEX], "").unwrap(),
            decoded(REQUEST_HEX).to_string()
        );
        assert_eq!(
            run_with(&["decode", "-"], &format!("  {REQUEST_HEX}\n")).unwrap(),
            decoded(REQUEST_HEX).to_string()
        );
        let json = decoded(REQUEST_HEX).to_string();
        assert_eq!(run_with(&["encode", &json], "").unwrap(), REQUEST_HEX);
        assert_eq!(run_with(&["encode", "-"], &json).unwrap(), REQUEST_HEX);
        assert_eq!(run_with(&["--help"], "").unwrap(), USAGE);

        for bad in [
            &[][..],
            &["frobnicate"],
            &["decode"],
            &["decode", "00", "00"],
            &["decode", "--what", "00"],
            &["encode"],
            &["encode", "{}", "{}"],
        ] {
            let e = run_with(bad, "").unwrap_err();
            assert_eq!(e.exit_code(), EXIT_USAGE, "{bad:?}");
            assert!(e.to_string().starts_with("gridwire: "));
        }
        let e = run_with(&["decode", "zz"], "").unwrap_err();
        assert_eq!(e.exit_code(), EXIT_INVALID);
        assert!(
            e.to_string().starts_with("gridwire: decode: invalid hex: "),
            "{e}"
        );
        let e = run_with(&["encode", "{"], "").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("gridwire: encode: invalid JSON: "),
            "{e}"
        );
        let e = Error::Invalid {
            command: "decode",
            reason: "a\nb".into(),
        };
        assert_eq!(e.to_string(), "gridwire: decode: a b");
    }
}
