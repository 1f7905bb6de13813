//! End-to-end tests of the `gridwire` binary: the §12 worked examples, decode → encode
//! identity over a set of conformant messages, and the exit status and one-line reason
//! for each kind of invalid input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use bytes::{Bytes, BytesMut};
use grid_core::codec::{
    self, ConnectRequest, ConnectResponse, Flags, Frame, MuxConnectError, Op, Ping, Pong,
    SubrouteId, Time,
};
use serde_json::{Value, json};

const REQUEST_HEX: &str = "970100cdea604e0e03c41148656c6c6f204772696420576f726c6421d8a27da3";
const RESPONSE_HEX: &str = "97010000000f03c41148656c6c6f204772696420576f726c6421";
const RESPONSE_CRC_HEX: &str = "20556bac";

/// Runs the binary with `args`, feeding `stdin` (if any) on standard input.
fn gridwire(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridwire"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gridwire");
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // The child may exit before reading everything (usage errors): ignore EPIPE.
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for gridwire");
    writer.join().unwrap();
    out
}

/// Runs a command that must succeed and returns its single line of output.
fn ok_line(args: &[&str], stdin: Option<&str>) -> String {
    let out = gridwire(args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    assert!(out.stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.ends_with('\n'), "output ends with a newline");
    assert_eq!(
        stdout.matches('\n').count(),
        1,
        "exactly one line: {stdout:?}"
    );
    stdout.trim_end().to_owned()
}

fn decode(hex: &str) -> Value {
    serde_json::from_str(&ok_line(&["decode", hex], None)).unwrap()
}

fn encode(json: &Value) -> String {
    ok_line(&["encode", &json.to_string()], None)
}

/// Runs a command that must fail with `code` and exactly one line on stderr starting
/// with `prefix`; returns that line.
fn fails(args: &[&str], stdin: Option<&str>, code: i32, prefix: &str) -> String {
    let out = gridwire(args, stdin);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    assert_eq!(stderr.matches('\n').count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.starts_with(prefix),
        "{args:?}: {stderr:?} does not start with {prefix:?}"
    );
    stderr.trim_end().to_owned()
}

fn hex(bytes: &[u8]) -> String {
    grid_conformance::wire::to_hex(bytes)
}

fn hello() -> Bytes {
    Bytes::from_static(b"Hello Grid World!")
}

// ---------------------------------------------------------------------------------------
// §12 worked examples
// ---------------------------------------------------------------------------------------

#[test]
fn worked_example_request() {
    let v = decode(REQUEST_HEX);
    assert_eq!(v["mux_id"], 1);
    assert_eq!(v["seq"], 0);
    assert_eq!(v["deadline_ms"], 60000);
    assert_eq!(v["handler"], 78);
    assert_eq!(v["op"], 14);
    assert_eq!(v["op_name"], "Request");
    assert_eq!(v["flags"], 3);
    assert_eq!(v["flag_names"], json!(["CRC", "EOF"]));
    assert_eq!(v["payload"], hex(&hello()));
    assert_eq!(v["payload_present"], true);
    assert_eq!(v["subroute"], Value::Null);
    assert_eq!(v["crc_ok"], true);
    assert!(v.get("frames").is_none() && v.get("control").is_none());

    let minimal = json!({"mux_id": 1, "seq": 0, "deadline_ms": 60000, "handler": 78,
                         "op": 14, "flags": 3, "payload": hex(&hello())});
    assert_eq!(encode(&minimal), REQUEST_HEX);
    assert_eq!(encode(&v), REQUEST_HEX);
}

#[test]
fn worked_example_response() {
    let wire = format!("{RESPONSE_HEX}{RESPONSE_CRC_HEX}");
    let v = decode(&wire);
    assert_eq!(
        (
            &v["mux_id"],
            &v["seq"],
            &v["deadline_ms"],
            &v["handler"],
            &v["op"],
            &v["flags"]
        ),
        (
            &json!(1),
            &json!(0),
            &json!(0),
            &json!(0),
            &json!(15),
            &json!(3)
        )
    );
    assert_eq!(v["op_name"], "Response");
    assert_eq!(v["payload"], hex(&hello()));
    assert_eq!(v["crc_ok"], true);
    let minimal = json!({"mux_id": 1, "seq": 0, "deadline_ms": 0, "handler": 0,
                         "op": 15, "flags": 3, "payload": hex(&hello())});
    assert_eq!(encode(&minimal), wire);
    // The spaced form of the spec is accepted as input too.
    let spaced =
        "97 01 00 00 00 0f 03 c4 11 48 65 6c 6c 6f 20 47 72 69 64 20 57 6f 72 6c 64 21 20 55 6b ac";
    assert_eq!(decode(spaced), v);
}

// ---------------------------------------------------------------------------------------
// decode → encode identity
// ---------------------------------------------------------------------------------------

fn frame(op: Op, mux_id: u64, flags: Flags, payload: Bytes) -> Frame {
    Frame {
        mux_id,
        flags,
        payload,
        ..Frame::new(op)
    }
}

fn merged(frames: &[Frame]) -> Bytes {
    let mut out = BytesMut::new();
    codec::encode_merged(frames, &mut out);
    out.freeze()
}

/// A set of conformant messages covering every op, trailer and container shape.
fn conformant_messages() -> Vec<Bytes> {
    let crc = Flags::CRC;
    let connect = ConnectRequest {
        id: [0x5a; 16],
        host: "http://10.0.0.2:9000".into(),
        time: Time {
            secs: 1_700_000_000,
            nanos: 123_456_789,
        },
        token: "eyJhbGciOi...".into(),
    };
    let connect_resp = ConnectResponse {
        id: [0xa5; 16],
        accepted: false,
        rejected_reason: "clock skew".into(),
    };
    let pong = Pong {
        not_found: false,
        err: None,
        t: Time::GO_ZERO,
    };
    let ping = Ping {
        t: Time { secs: 1, nanos: 2 },
    };
    let mux_err = MuxConnectError {
        error: "Invalid Handler".into(),
    };

    let mut sub = Frame {
        handler: 78,
        deadline_ms: 60_000,
        subroute: Some(SubrouteId::new(78, "subroute/1")),
        ..frame(Op::Request, 7, crc | Flags::EOF | Flags::SUBROUTE, hello())
    };
    let sub_no_crc = Frame {
        flags: Flags::SUBROUTE,
        ..sub.clone()
    };
    let max = Frame {
        mux_id: u64::MAX,
        seq: u32::MAX,
        deadline_ms: u32::MAX,
        handler: 255,
        ..frame(
            Op::from_u8(255),
            0,
            Flags(0xdf),
            Bytes::from(vec![0xee; 300]),
        )
    };
    let mut frames = vec![
        frame(Op::Request, 1, crc | Flags::EOF, hello()),
        frame(
            Op::Connect,
            0,
            Flags::NONE,
            codec::to_payload(|o| connect.encode(o)),
        ),
        frame(
            Op::ConnectResponse,
            0,
            Flags::NONE,
            codec::to_payload(|o| connect_resp.encode(o)),
        ),
        frame(
            Op::Ping,
            0,
            Flags::NONE,
            codec::to_payload(|o| ping.encode(o)),
        ),
        frame(Op::Ping, 12, crc, Bytes::new()),
        frame(Op::Pong, 12, crc, codec::to_payload(|o| pong.encode(o))),
        frame(
            Op::MuxConnectError,
            3,
            crc,
            codec::to_payload(|o| mux_err.encode(o)),
        ),
        frame(
            Op::MuxServerMsg,
            3,
            crc | Flags::PAYLOAD_IS_ZERO,
            Bytes::new(),
        ),
        frame(
            Op::MuxServerMsg,
            3,
            crc | Flags::EOF | Flags::PAYLOAD_IS_ERR,
            Bytes::from_static(b"boom"),
        ),
        frame(Op::Disconnect, 0, Flags::NONE, Bytes::new()),
        frame(Op::from_u8(0), 0, Flags::NONE, Bytes::new()),
        sub.clone(),
        sub_no_crc.clone(),
        max.clone(),
    ];
    sub.seq = 1;
    let container = merged(&[
        frame(Op::Response, 1, crc | Flags::EOF, hello()),
        sub.clone(),
        frame(Op::UnblockSrvMux, 9, crc, Bytes::new()),
        max,
    ]);
    frames.push(Frame {
        seq: 0,
        ..frame(Op::AckMux, 9, crc, Bytes::new())
    });
    let mut out: Vec<Bytes> = frames.iter().map(Frame::to_bytes).collect();
    out.push(container);
    out.push(merged(std::slice::from_ref(&sub_no_crc)));
    out
}

#[test]
fn decode_then_encode_gives_the_same_bytes() {
    for wire in conformant_messages() {
        let h = hex(&wire);
        let v = decode(&h);
        assert_eq!(encode(&v), h, "{v}");
    }
}

#[test]
fn containers_and_trailers_decode_as_documented() {
    let messages = conformant_messages();
    let container = decode(&hex(&messages[messages.len() - 2]));
    assert_eq!(container["op"], 17);
    assert_eq!(container["op_name"], "Merged");
    assert_eq!(container["seq"], 4);
    assert_eq!(container["crc_ok"], Value::Null);
    let inner = container["frames"].as_array().unwrap();
    assert_eq!(inner.len(), 4);
    assert_eq!(inner[0]["op_name"], "Response");
    assert_eq!(inner[0]["crc_ok"], true);
    let sub = &inner[1];
    assert_eq!(sub["flags"], 0x23);
    assert_eq!(
        sub["subroute"],
        "4e0013d069cc3dd37bc0093a9cdb03eefca225abedd6438464eda47321edeecb"
    );
    assert_eq!(inner[3]["mux_id"], u64::MAX);
    assert_eq!(
        inner[3]["flag_names"],
        json!([
            "CRC",
            "EOF",
            "STATELESS",
            "PAYLOAD_IS_ERR",
            "PAYLOAD_IS_ZERO",
            "0xc0"
        ])
    );

    // The control payloads, and the nil-vs-empty distinction.
    let connect = decode(&hex(&messages[1]));
    assert_eq!(connect["control"]["host"], "http://10.0.0.2:9000");
    assert_eq!(
        connect["control"]["time"],
        json!({"secs": 1_700_000_000, "nanos": 123_456_789})
    );
    let pong = decode(&hex(&messages[5]));
    assert_eq!(
        pong["control"],
        json!({"nf": false, "e": null, "t": {"secs": -62_135_596_800i64, "nanos": 0}})
    );
    let empty = decode(&hex(&messages[7]));
    assert_eq!(
        (&empty["payload"], &empty["payload_present"]),
        (&json!(""), &json!(true))
    );
    let absent = decode(&hex(&messages[4]));
    assert_eq!(
        (&absent["payload"], &absent["payload_present"]),
        (&json!(""), &json!(false))
    );
}

#[test]
fn large_payloads_travel_through_stdin() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let f = frame(Op::MuxClientMsg, 77, Flags::CRC, payload.into());
    let wire = hex(&f.to_bytes());
    assert!(
        wire.len() > 128 * 1024,
        "too long for one command-line argument"
    );
    let json_line = ok_line(&["decode", "-"], Some(&format!("\n  {wire}\n\n")));
    let v: Value = serde_json::from_str(&json_line).unwrap();
    assert_eq!(v["payload"].as_str().unwrap().len(), 140_000);
    assert_eq!(ok_line(&["encode", "-"], Some(&json_line)), wire);
    // A container holding it.
    let container = hex(&merged(&[f.clone(), f]));
    let json_line = ok_line(&["decode", "-"], Some(&container));
    assert_eq!(ok_line(&["encode", "-"], Some(&json_line)), container);
}

// ---------------------------------------------------------------------------------------
// Invalid input
// ---------------------------------------------------------------------------------------

/// The fields of a request (MuxID 1, op 14, no flags) in hex, then `payload_hex`.
fn with_payload(payload_hex: &str) -> String {
    format!("97010000000e00{payload_hex}")
}

#[test]
fn invalid_hex_inputs_fail_with_one_line() {
    fails(
        &["decode", "97zz"],
        None,
        1,
        "gridwire: decode: invalid hex: invalid hex character 'z'",
    );
    fails(
        &["decode", "970"],
        None,
        1,
        "gridwire: decode: invalid hex: odd number of hex digits",
    );
    fails(
        &["decode", "-"],
        Some("9 7"),
        1,
        "gridwire: decode: invalid hex: odd number",
    );
    fails(&["decode", ""], None, 1, "gridwire: decode: truncated");
}

#[test]
fn invalid_frames_fail_with_one_line() {
    let mut bad_crc = REQUEST_HEX.to_owned();
    bad_crc.replace_range(62..64, "a4");
    let line = fails(
        &["decode", &bad_crc],
        None,
        1,
        "gridwire: decode: crc mismatch: 0xa47da2d8 (given)",
    );
    assert!(line.contains("!= 0xa37da2d8 (bytes)"), "{line}");

    let truncated = &REQUEST_HEX[..REQUEST_HEX.len() - 20];
    fails(&["decode", truncated], None, 1, "gridwire: decode: ");
    fails(
        &["decode", &REQUEST_HEX[..20]],
        None,
        1,
        "gridwire: decode: truncated Payload",
    );

    fails(
        &["decode", &with_payload("c0")],
        None,
        1,
        "gridwire: decode: unexpected msgpack type 0xc0 for Payload",
    );
    fails(
        &["decode", &with_payload("a26869")],
        None,
        1,
        "gridwire: decode: unexpected msgpack type 0xa2 for Payload",
    );
    fails(
        &["decode", "960100000000c400"],
        None,
        1,
        "gridwire: decode: frame array at byte 0 has 6 elements, want 7",
    );
    fails(
        &["decode", "98010000000e00c40000"],
        None,
        1,
        "gridwire: decode: frame array at byte 0 has 8 elements",
    );

    // Subroute flag with 31 of its 32 bytes.
    let short_sub = format!("970100000e0020c400{}", "11".repeat(31));
    fails(
        &["decode", &short_sub],
        None,
        1,
        "gridwire: decode: want subroute len 32, got 31",
    );
    // CRC flag with 3 of its 4 bytes.
    fails(
        &["decode", "970100000e0001c400aabbcc"],
        None,
        1,
        "gridwire: decode: want crc len 4, got 3",
    );

    // Containers whose count lies, both ways, and a nested container.
    let inner = format!("c420{REQUEST_HEX}");
    let header = |n: u8| format!("9700{n:02x}00001100c400");
    fails(
        &["decode", &format!("{}{inner}", header(2))],
        None,
        1,
        "gridwire: decode: merged container declares 2 frames but holds 1",
    );
    fails(
        &["decode", &format!("{}{inner}{inner}", header(1))],
        None,
        1,
        "gridwire: decode: merged container declares 1 frames but holds 1 (+34 bytes)",
    );
    let container = hex(&merged(&[frame(Op::Request, 1, Flags::NONE, Bytes::new())]));
    let nested = format!("{}c4{:02x}{container}", header(1), container.len() / 2);
    fails(
        &["decode", &nested],
        None,
        1,
        "gridwire: decode: frames[0]: nested merged container",
    );
    // A bad CRC inside a container names the frame.
    let mut bad_inner = REQUEST_HEX.to_owned();
    bad_inner.replace_range(62..64, "00");
    fails(
        &["decode", &format!("{}c420{bad_inner}", header(1))],
        None,
        1,
        "gridwire: decode: frames[0]: crc mismatch",
    );
}

#[test]
fn a_bad_crc_can_be_shown_on_request() {
    let mut bad_crc = REQUEST_HEX.to_owned();
    bad_crc.replace_range(62..64, "a4");
    let v: Value =
        serde_json::from_str(&ok_line(&["decode", "--allow-bad-crc", &bad_crc], None)).unwrap();
    assert_eq!(v["crc_ok"], false);
    assert_eq!(encode(&v), REQUEST_HEX, "encoding writes the right CRC");
}

#[test]
fn invalid_json_fails_with_one_line() {
    let ok = json!({"mux_id": 1, "seq": 0, "deadline_ms": 0, "handler": 0, "op": 14, "flags": 2});
    assert_eq!(encode(&ok), "97010000000e02c400");
    let enc = |v: &Value| v.to_string();

    fails(
        &["encode", "{\"mux_id\": 1,"],
        None,
        1,
        "gridwire: encode: invalid JSON: ",
    );
    fails(
        &["encode", "-"],
        Some("[1, 2]"),
        1,
        "gridwire: encode: expected a JSON object, got an array",
    );
    for key in ["mux_id", "seq", "deadline_ms", "handler", "op", "flags"] {
        let mut v = ok.clone();
        v.as_object_mut().unwrap().remove(key);
        fails(
            &["encode", &enc(&v)],
            None,
            1,
            &format!("gridwire: encode: missing key \"{key}\""),
        );
    }
    for (key, bad) in [
        ("mux_id", json!(-1)),
        ("mux_id", json!(1e20)),
        ("seq", json!(4_294_967_296u64)),
        ("deadline_ms", json!(-5)),
        ("handler", json!(256)),
        ("op", json!(300)),
        ("flags", json!(256)),
        ("flags", json!("2")),
    ] {
        let mut v = ok.clone();
        v[key] = bad;
        fails(
            &["encode", &enc(&v)],
            None,
            1,
            &format!("gridwire: encode: {key}: expected an integer in 0..="),
        );
    }
    let mut v = ok.clone();
    v["payload"] = json!("abc");
    fails(
        &["encode", &enc(&v)],
        None,
        1,
        "gridwire: encode: payload: odd number of hex digits",
    );
    v["payload"] = json!("zz");
    fails(
        &["encode", &enc(&v)],
        None,
        1,
        "gridwire: encode: payload: invalid hex character",
    );

    // Subroute and its flag must agree.
    let mut v = ok.clone();
    v["flags"] = json!(0x21);
    fails(
        &["encode", &enc(&v)],
        None,
        1,
        "gridwire: encode: flags has the subroute bit (0x20) but subroute is null",
    );
    v["flags"] = json!(0x01);
    v["subroute"] = json!("00".repeat(32));
    fails(
        &["encode", &enc(&v)],
        None,
        1,
        "gridwire: encode: subroute is given but flags lacks",
    );
    v["flags"] = json!(0x20);
    v["subroute"] = json!("00".repeat(31));
    fails(
        &["encode", &enc(&v)],
        None,
        1,
        "gridwire: encode: subroute: expected 32 bytes, got 31",
    );

    // Containers.
    let mut c =
        json!({"mux_id": 0, "seq": 2, "deadline_ms": 0, "handler": 0, "op": 17, "flags": 0});
    fails(
        &["encode", &enc(&c)],
        None,
        1,
        "gridwire: encode: missing key \"frames\"",
    );
    c["frames"] = json!([ok.clone()]);
    fails(
        &["encode", &enc(&c)],
        None,
        1,
        "gridwire: encode: a container's header must have seq = number of frames (1)",
    );
    c["seq"] = json!(1);
    assert_eq!(
        encode(&c),
        "970001000011 00c400 c40997010000000e02c400".replace(' ', "")
    );
    c["frames"] = json!([{"op": 14}]);
    fails(
        &["encode", &enc(&c)],
        None,
        1,
        "gridwire: encode: frames[0]: missing key",
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["bogus"],
        &["decode"],
        &["decode", "00", "00"],
        &["decode", "--frobnicate", "00"],
        &["encode"],
        &["encode", "{}", "{}"],
    ] {
        fails(args, None, 2, "gridwire: ");
    }
    let help = ok_line(&["--help"], None);
    assert!(help.starts_with("usage: gridwire decode"), "{help}");
}
