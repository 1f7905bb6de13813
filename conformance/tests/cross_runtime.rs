//! A tokio node, an async-std node and a smol node in one cluster.

use std::future::Future;
use std::sync::Arc;

use grid_core::driver::Runtime;

/// Runs `scenario` with one node on each runtime (tokio with a worker of its own), from
/// async-std's executor.
fn on_three_runtimes<F: Future<Output = ()>>(scenario: impl FnOnce(Vec<Arc<dyn Runtime>>) -> F) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rts: Vec<Arc<dyn Runtime>> = vec![
        Arc::new(grid_tokio::Tokio::with_handle(tokio.handle().clone())),
        grid_async_std::runtime(),
        grid_async_std::smol_runtime(),
    ];
    async_std::task::block_on(scenario(rts));
}

#[test]
fn tokio_async_std_and_smol_nodes_form_one_cluster() {
    on_three_runtimes(grid_conformance::suite::cross_runtime);
}

#[test]
fn tls_nodes_on_tokio_async_std_and_smol_form_one_cluster() {
    on_three_runtimes(grid_conformance::tls_suite::tls_cross_runtime);
}
