//! The shared async suite on async-std.

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    async_std::task::block_on(f)
}

grid_conformance::suite_tests!(block_on, grid_async_std::runtime());
grid_conformance::typed_suite_tests!(block_on, grid_async_std::runtime());
grid_conformance::hardening_tests!(block_on, grid_async_std::runtime());
grid_conformance::tls_suite_tests!(block_on, grid_async_std::runtime());
