//! Long stress runs, ignored by default. Run them all with
//!
//! ```text
//! cargo test --release -p grid-conformance --test stress -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each prints the process's resident memory before and after its rounds and fails if
//! it keeps growing; `GRID_SOAK_SECS` sets the soak's length (default 120).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::alloc::System;

use bytes::Bytes;
use grid_conformance::hardening::{COUNT, fast_config, proxied};
use grid_conformance::suite::{ECHO, STREAM_ECHO, cluster, until_link_works, within};
use grid_core::driver::Runtime;
use grid_core::proto::CallError;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, in MiB (exact, unlike the resident size).
fn live_mib() -> f64 {
    let s = GLOBAL.stats();
    (s.bytes_allocated as f64 - s.bytes_deallocated as f64) / (1 << 20) as f64
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

/// One sample: (resident MiB, live heap MiB).
fn mem() -> (f64, f64) {
    (rss_mib(), live_mib())
}

/// Prints the samples and fails if the live heap after the last round exceeds the
/// largest of the first `warm` rounds (the warm-up) by more than `slack` MiB. The
/// resident size is printed too; it also moves with the allocator's caching.
fn assert_flat(name: &str, rounds: &[(f64, f64)], warm: usize, slack: f64) {
    let rss: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    let live: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    println!("{name}: RSS per round (MiB): {rss:.1?}");
    println!("{name}: live heap per round (MiB): {live:.1?}");
    let warm = live.iter().take(warm).fold(0.0f64, |a, &b| a.max(b));
    let last = live[live.len() - 1];
    assert!(
        last <= warm + slack,
        "{name}: live heap grew from {warm:.1} to {last:.1} MiB"
    );
}

/// A link carries 10,000 concurrent streams (each sends an item, reads its echo and
/// closes), five times over; memory after the last round is what it was after the
/// first.
#[test]
#[ignore]
fn ten_thousand_concurrent_streams() {
    block_on(async {
        let rt = grid_tokio::runtime();
        let c = cluster(&rt, 2).await;
        let conn = c.conn(0, 1);
        println!("streams: RSS at start {:.1} MiB", rss_mib());
        let mut rounds = Vec::new();
        for round in 0..5 {
            let t0 = Instant::now();
            let done = Arc::new(AtomicU64::new(0));
            let peak = Arc::new(AtomicU64::new(0));
            for i in 0..10_000u32 {
                let (conn, done) = (conn.clone(), done.clone());
                let peak = peak.clone();
                tokio::spawn(async move {
                    let mut s = loop {
                        match conn.new_stream(STREAM_ECHO, None) {
                            Ok(s) => break s,
                            Err(CallError::Congested) => tokio::task::yield_now().await,
                            Err(e) => panic!("open: {e}"),
                        }
                    };
                    let muxes = conn.stats().session.outgoing_muxes as u64;
                    peak.fetch_max(muxes, Ordering::Relaxed);
                    let mut req = s.requests.take().expect("input");
                    let item = Bytes::from(i.to_be_bytes().to_vec());
                    req.send(item.clone()).await.expect("send");
                    assert_eq!(s.responses.next().await, Some(Ok(item)));
                    req.close();
                    assert!(s.responses.next().await.is_none());
                    done.fetch_add(1, Ordering::Relaxed);
                });
            }
            within(&rt, Duration::from_secs(120), async {
                while done.load(Ordering::Relaxed) < 10_000 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert_eq!(conn.stats().session.outgoing_muxes, 0);
            rounds.push(mem());
            println!(
                "streams: round {round}: 10,000 streams in {:?}, {} open at the peak, RSS {:.1} MiB, live heap {:.1} MiB",
                t0.elapsed(),
                peak.load(Ordering::Relaxed),
                rss_mib(),
                live_mib()
            );
        }
        assert_flat("streams", &rounds, 2, 4.0);
        c.shutdown().await;
    });
}

/// A million streams opened and cancelled at once (16 tasks in parallel); the muxes
/// are freed on both sides and memory stays flat.
#[test]
#[ignore]
fn million_open_cancel_cycles() {
    block_on(async {
        let rt = grid_tokio::runtime();
        let c = cluster(&rt, 2).await;
        let conn = c.conn(0, 1);
        // The tasks each node runs at rest (listener, dialer, socket task): a round is
        // sampled once every cancelled handler's task has finished too.
        let resting: Vec<usize> = c.nodes.iter().map(|n| n.running_tasks()).collect();
        println!("open/cancel: RSS at start {:.1} MiB", rss_mib());
        let mut rounds = Vec::new();
        let t0 = Instant::now();
        for round in 0..10 {
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let conn = conn.clone();
                tasks.push(tokio::spawn(async move {
                    let mut congested = 0u64;
                    let mut n = 0;
                    while n < 100_000 / 16 + 1 {
                        match conn.new_stream(STREAM_ECHO, None) {
                            Ok(s) => {
                                drop(s);
                                n += 1;
                            }
                            Err(CallError::Congested) => {
                                congested += 1;
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("open: {e}"),
                        }
                        if n % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    congested
                }));
            }
            let mut congested = 0;
            for t in tasks {
                congested += t.await.expect("task");
            }
            // Every stream's mux is freed on both sides once the cancels arrive.
            let back = c.conn(1, 0);
            within(&rt, Duration::from_secs(60), async {
                // The peer's queue drains too: a request arriving while it is full
                // would have its reply dropped (`replies_dropped`), by design.
                while back.stats().session.incoming_muxes != 0
                    || back.stats().session.queued_frames != 0
                    || c.nodes
                        .iter()
                        .zip(&resting)
                        .any(|(n, r)| n.running_tasks() > *r)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert_eq!(conn.stats().session.outgoing_muxes, 0);
            let r = conn
                .request_with_deadline(ECHO, Bytes::new(), Duration::from_secs(10))
                .await;
            assert_eq!(
                r,
                Ok(Bytes::new()),
                "ours: {:?}\npeer's: {:?}",
                conn.stats(),
                back.stats()
            );
            rounds.push(mem());
            println!(
                "open/cancel: round {round}: {} cycles so far in {:?} ({congested} congested retries), RSS {:.1} MiB, live heap {:.1} MiB",
                (round + 1) * (100_000 / 16 + 1) * 16,
                t0.elapsed(),
                rss_mib(),
                live_mib()
            );
        }
        assert_flat("open/cancel", &rounds, 2, 4.0);
        c.shutdown().await;
    });
}

/// More requests per second than the soak makes (about 2,000 on 2 cores).
const SOAK_REQUESTS_PER_SEC: usize = 10_000;

/// Minutes of mixed traffic over a proxied link that is cut (FIN or RST) every two
/// seconds: requests and streams keep going, every call ends, no request runs twice,
/// and memory sampled every ten seconds stays flat.
#[test]
#[ignore]
fn soak_with_flapping_link() {
    let secs: u64 = std::env::var("GRID_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    block_on(async move {
        let rt: Arc<dyn Runtime> = grid_tokio::runtime();
        let p = proxied(&rt, fast_config()).await;
        let out = p.out();
        let end = Instant::now() + Duration::from_secs(secs);
        let ok = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let ids = Arc::new(AtomicU64::new(0));
        // The handler's table of runs per request ID would grow with every request and
        // hide a leak of Grid's: it gets room for more requests than the soak makes up
        // front, and the live heap sampled leaves that room out. The resident size
        // printed includes the pages of the table the requests fill.
        let room = usize::try_from(secs)
            .unwrap_or(usize::MAX)
            .saturating_mul(SOAK_REQUESTS_PER_SEC);
        let before = live_mib();
        p.counts.lock().expect("counts").reserve(room);
        let table = live_mib() - before;
        let grid_heap = move || live_mib() - table;
        println!(
            "soak: {secs} s, RSS at start {:.1} MiB, the handler's table {table:.1} MiB",
            rss_mib()
        );
        let mut workers = Vec::new();
        for w in 0..8 {
            let (conn, ok, lost, ids) = (out.clone(), ok.clone(), lost.clone(), ids.clone());
            workers.push(tokio::spawn(async move {
                while Instant::now() < end {
                    if w % 2 == 0 {
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        match conn
                            .request(COUNT, Bytes::from(id.to_be_bytes().to_vec()))
                            .await
                        {
                            Ok(b) => {
                                assert_eq!(&b[..], &id.to_be_bytes());
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(CallError::Disconnected | CallError::Congested) => {
                                lost.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("request: {e}"),
                        }
                    } else {
                        let Ok(mut s) = conn.new_stream(STREAM_ECHO, None) else {
                            lost.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        };
                        let mut req = s.requests.take().expect("input");
                        for i in 0..16u8 {
                            if req.send(Bytes::from(vec![i; 100])).await.is_err() {
                                break;
                            }
                            match s.responses.next().await {
                                Some(Ok(b)) => assert_eq!(b, vec![i; 100]),
                                _ => break,
                            }
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let mut samples = Vec::new();
        let mut flaps = 0u64;
        let mut next_sample = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if flaps % 2 == 0 {
                p.proxy.cut_fin();
            } else {
                p.proxy.cut_rst();
            }
            flaps += 1;
            if Instant::now() >= next_sample {
                next_sample += Duration::from_secs(10);
                samples.push((rss_mib(), grid_heap()));
                println!(
                    "soak: {:>4} s: {} calls ok, {} ended by a cut, {flaps} cuts, RSS {:.1} MiB, live heap {:.1} MiB",
                    secs - end.saturating_duration_since(Instant::now()).as_secs(),
                    ok.load(Ordering::Relaxed),
                    lost.load(Ordering::Relaxed),
                    rss_mib(),
                    grid_heap()
                );
            }
        }
        for w in workers {
            within(&rt, Duration::from_secs(30), w)
                .await
                .expect("worker");
        }
        within(&rt, Duration::from_secs(30), until_link_works(&out)).await;
        let counts = p.counts.lock().expect("counts").clone();
        assert!(counts.values().all(|&n| n == 1), "a request ran twice");
        assert!(
            counts.len() <= room,
            "{} requests outgrew the table's room for {room}",
            counts.len()
        );
        if samples.len() >= 2 {
            // The first sample, ten seconds in, is after the warm-up.
            assert_flat("soak", &samples, 1, 4.0);
        }
        p.shutdown().await;
    });
}
