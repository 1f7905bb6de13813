//! The deterministic cluster simulation: many seeds, replays, and a soak.
//!
//! `GRID_SIM_SEEDS=n` changes how many seeds the default run covers;
//! `GRID_SIM_SEED=n` replays one seed (with its transcript) in the `replay` test.

use grid_conformance::sim::{Failure, SimConfig, run_seed};

fn seeds_from_env(default: u64) -> u64 {
    std::env::var("GRID_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `count` seeds starting at `first` on every core; returns the first failure.
fn run_many(first: u64, count: u64, cfg: &SimConfig) -> Option<Failure> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let failures = &failures;
            s.spawn(move || {
                let mut seed = first + t;
                while seed < first + count {
                    if let Err(f) = run_seed(seed, cfg) {
                        failures.lock().unwrap().push(f);
                        return;
                    }
                    seed += threads;
                }
            });
        }
    });
    let mut f = failures.into_inner().unwrap();
    f.sort_by_key(|f| f.seed);
    f.into_iter().next()
}

#[test]
fn many_seeds_keep_every_invariant() {
    let count = seeds_from_env(10_000);
    if let Some(f) = run_many(0, count, &SimConfig::default()) {
        panic!("{f}");
    }
}

#[test]
fn fault_free_seeds_keep_every_invariant() {
    let cfg = SimConfig {
        faults: false,
        ..SimConfig::default()
    };
    if let Some(f) = run_many(1_000_000, 500, &cfg) {
        panic!("{f}");
    }
}

#[test]
fn the_same_seed_gives_the_same_transcript() {
    let cfg = SimConfig::default();
    for seed in (0..5_000).step_by(97) {
        let a = run_seed(seed, &cfg).unwrap_or_else(|f| panic!("{f}"));
        let b = run_seed(seed, &cfg).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(a, b, "seed {seed} is not deterministic");
    }
    // Different seeds explore different runs.
    let x = run_seed(1, &cfg).unwrap().transcript;
    let y = run_seed(2, &cfg).unwrap().transcript;
    assert_ne!(x, y);
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("GRID_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return;
    };
    let cfg = SimConfig {
        record: true,
        ..SimConfig::default()
    };
    match run_seed(seed, &cfg) {
        Ok(r) => println!("seed {seed} passed: {r:?}"),
        Err(f) => panic!("{f}"),
    }
}

#[test]
#[ignore = "soak: a million seeds; run with --release --ignored"]
fn soak_a_million_seeds() {
    let count = seeds_from_env(1_000_000);
    if let Some(f) = run_many(10_000_000, count, &SimConfig::default()) {
        panic!("{f}");
    }
}
