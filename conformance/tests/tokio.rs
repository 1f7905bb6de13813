//! The shared async suite on tokio.

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

grid_conformance::suite_tests!(block_on, grid_tokio::runtime());
grid_conformance::typed_suite_tests!(block_on, grid_tokio::runtime());
grid_conformance::hardening_tests!(block_on, grid_tokio::runtime());
grid_conformance::tls_suite_tests!(block_on, grid_tokio::runtime());
