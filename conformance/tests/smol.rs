//! The shared async suite on smol.

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    smol::block_on(f)
}

grid_conformance::suite_tests!(block_on, grid_async_std::smol_runtime());
grid_conformance::typed_suite_tests!(block_on, grid_async_std::smol_runtime());
grid_conformance::hardening_tests!(block_on, grid_async_std::smol_runtime());
grid_conformance::tls_suite_tests!(block_on, grid_async_std::smol_runtime());
