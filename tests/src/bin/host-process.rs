//! The `wasm-replicaset` binary's `main`, built inside this package so integration tests and
//! benchmarks can run the controller as a separate process (`env!("CARGO_BIN_EXE_host-process")`),
//! exactly as the installed binary runs. (Cargo gives a binary's path only to its own package's
//! tests, and two packages may not build binaries of the same name.)
fn main() -> std::process::ExitCode {
    wasm_replicaset::main()
}
