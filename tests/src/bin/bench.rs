//! `cargo run --release -p tests --bin bench [-- --quick]`: the benchmark suite, the host vs
//! kube-controller-manager's ReplicaSet controller on a real control plane; writes BENCHMARKS.md.
//! See `tests::bench`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let options = tests::bench::Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tests::bench::main(options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
