//! The shared async suite on tokio.

use std::sync::Arc;

use grid_conformance::logs::Capture;
use grid_conformance::suite;
use grid_core::driver::Runtime;

fn rt() -> Arc<dyn Runtime> {
    grid_tokio::runtime()
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            Capture::install();
            suite::$name(rt()).await;
        }
    )*};
}

scenarios!(
    single_roundtrips,
    request_deadline,
    dropped_request_returns_at_once,
    stream_roundtrip,
    stream_cancel,
    congestion_without_head_of_line_blocking,
    link_loss_and_reconnect,
    shutdown_with_calls_in_flight,
    dial_rule_across_35_hosts,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_bad_token() {
    suite::rejected_bad_token(rt(), &Capture::install()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_unknown_host() {
    suite::rejected_unknown_host(rt(), &Capture::install()).await;
}
