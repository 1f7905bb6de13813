//! `gridwire`: decode a grid message (hex) to one line of JSON, or encode JSON back to hex.
//!
//! ```text
//! gridwire decode [--allow-bad-crc] HEX|-
//! gridwire encode JSON|-
//! ```
//!
//! See [`grid_conformance::wire`] for the JSON format and the exit statuses.

use std::io::Write;
use std::process::ExitCode;

use grid_conformance::wire;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(_) => {
                eprintln!("gridwire: arguments must be UTF-8; {}", wire::USAGE);
                return ExitCode::from(wire::EXIT_USAGE);
            }
        }
    }
    match wire::run(&args, &mut std::io::stdin().lock()) {
        Ok(line) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return ExitCode::from(wire::EXIT_INVALID);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
