//! The host's own `main`, built inside this package so integration tests and benchmarks can run
//! the controller as a separate process (`env!("CARGO_BIN_EXE_host-process")`), exactly as the
//! `host` binary runs.
fn main() -> std::process::ExitCode {
    wasm_replicaset::main()
}
