//! Grid's conformance tools: the `gridwire` inspector, the deterministic simulation,
//! the async suites (byte-level, typed and TLS) shared by every runtime, and the benchmarks.

pub mod accept_faults;
pub mod bench_args;
pub mod hardening;
pub mod logs;
pub mod proxy;
pub mod sim;
pub mod suite;
pub mod tls_suite;
pub mod typed_suite;
pub mod wire;

/// One `#[test]` per scenario of a suite module: `$module::$name($rt)` run with
/// `$block_on` under a log capture; the scenarios after `logged:` also get the capture,
/// to check what was logged. The suites' own macros (`suite_tests!`, ...) list their
/// scenarios through it.
#[doc(hidden)]
#[macro_export]
macro_rules! scenario_tests {
    ($module:ident, $block_on:path, $rt:expr; $($name:ident,)*
        $(; logged: $($logged:ident),*)?) => {
        $(
            #[test]
            fn $name() {
                $block_on(async {
                    $crate::logs::Capture::install();
                    $crate::$module::$name($rt).await
                })
            }
        )*
        $($(
            #[test]
            fn $logged() {
                $block_on(async {
                    let logs = $crate::logs::Capture::install();
                    $crate::$module::$logged($rt, &logs).await
                })
            }
        )*)?
    };
}
