//! `kubectl wasm-replicaset ...`: the same command line as a kubectl plugin. kubectl passes the
//! words after the plugin's name and its environment (`KUBECONFIG`), never its own flags.
fn main() -> std::process::ExitCode {
    wasm_replicaset::main_as(wasm_replicaset::KUBECTL_PLUGIN)
}
