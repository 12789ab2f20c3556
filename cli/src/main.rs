//! The `wasm-replicaset` binary: everything lives in the library; see `wasm_replicaset::main`.
fn main() -> std::process::ExitCode {
    wasm_replicaset::main()
}
