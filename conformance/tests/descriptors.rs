//! A listener whose process runs out of descriptors, on every runtime.
//!
//! Filling the descriptor table is process-wide and would break the tests running
//! alongside, so each test re-executes this binary for itself alone, in a child with a
//! low `RLIMIT_NOFILE` (set by `sh`'s `ulimit`), and checks that the child passed.

#![cfg(unix)]

use std::process::Command;

use grid_conformance::hardening::accept_survives_descriptor_exhaustion;

/// Set in the child: run the scenario instead of spawning.
const CHILD: &str = "GRID_DESCRIPTORS_CHILD";

/// Runs `scenario` in a child process (re-running test `name` of this binary).
fn in_child(name: &str, scenario: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        grid_conformance::logs::Capture::install();
        return scenario();
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name}: {}\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn descriptors_exhausted_tokio() {
    in_child("descriptors_exhausted_tokio", || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(async {
                // The binding attaches to the runtime it is created in.
                accept_survives_descriptor_exhaustion(grid_tokio::runtime()).await
            })
    });
}

#[test]
fn descriptors_exhausted_async_std() {
    in_child("descriptors_exhausted_async_std", || {
        async_std::task::block_on(accept_survives_descriptor_exhaustion(
            grid_async_std::runtime(),
        ))
    });
}

#[test]
fn descriptors_exhausted_smol() {
    in_child("descriptors_exhausted_smol", || {
        smol::block_on(accept_survives_descriptor_exhaustion(
            grid_async_std::smol_runtime(),
        ))
    });
}
