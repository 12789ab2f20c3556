//! The kubectl plugin as kubectl finds and runs it: on PATH as `kubectl-wasm_replicaset`, listed
//! by `kubectl plugin list`, and `kubectl wasm-replicaset module list` against the test control
//! plane. kubectl passes plugins its environment (KUBECONFIG) but never its own flags.

use std::{path::PathBuf, process::Output};

use anyhow::{Context, Result, ensure};
use host::modules::resource::Mode;
use tests::{Kubectl, modules, ns, shared, workdir::WorkDir};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-wasm_replicaset");

/// A directory holding only the plugin, to be the whole PATH (target/debug holds other
/// `kubectl-*` files, such as dep-info, that `kubectl plugin list` would warn about).
fn plugin_dir(dir: &WorkDir) -> Result<PathBuf> {
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::os::unix::fs::symlink(PLUGIN, bin.join("kubectl-wasm_replicaset")).context("linking the plugin")?;
    Ok(bin)
}

/// Runs kubectl (without `--kubeconfig`, which kubectl would not pass on) with PATH = `path`.
async fn kubectl(path: &PathBuf, kubeconfig: &str, args: &[&str]) -> Result<Output> {
    let bin = shared().await?.kubectl()?.bin().to_path_buf();
    let mut cmd = Kubectl::new(bin, None).command();
    cmd.args(args).env("PATH", path).env("KUBECONFIG", kubeconfig).env_remove("POD_NAMESPACE");
    Ok(cmd.output().await?)
}

fn both(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn kubectl_lists_the_plugin_and_runs_module_list_through_it() -> Result<()> {
    let ns = ns().await?;
    modules::install_crd(ns.client()).await?;
    modules::push(&ns, "listed-policy", test_guests::NEWEST_FIRST, Mode::Shadow).await?;
    let dir = WorkDir::create("kubectl-plugin")?;
    let path = plugin_dir(&dir)?;
    let kubeconfig = shared().await?.kubeconfig_path().display().to_string();

    let listed = kubectl(&path, &kubeconfig, &["plugin", "list"]).await?;
    ensure!(listed.status.success(), "{}", both(&listed));
    ensure!(both(&listed).contains(&path.join("kubectl-wasm_replicaset").display().to_string()), "{}", both(&listed));

    let modules = kubectl(&path, &kubeconfig, &["wasm-replicaset", "module", "list", "-n", ns.name()]).await?;
    ensure!(modules.status.success(), "{}", both(&modules));
    let table = String::from_utf8_lossy(&modules.stdout);
    ensure!(table.starts_with("NAME") && table.contains("listed-policy") && table.contains("Shadow"), "{table}");

    let help = kubectl(&path, &kubeconfig, &["wasm-replicaset", "--help"]).await?;
    ensure!(String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl wasm-replicaset"), "{}", both(&help));
    Ok(())
}

#[tokio::test]
async fn without_a_cluster_the_plugin_names_the_kubeconfig_problem_in_one_line() -> Result<()> {
    let dir = WorkDir::create("kubectl-plugin")?;
    let path = plugin_dir(&dir)?;
    let missing = dir.path().join("no-such-kubeconfig");
    let output = kubectl(&path, &missing.display().to_string(), &["wasm-replicaset", "module", "list"]).await?;
    ensure!(!output.status.success(), "{}", both(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(lines.len() == 1, "one line expected: {stderr}");
    ensure!(lines[0].starts_with("error: ") && lines[0].contains(&missing.display().to_string()), "{stderr}");
    Ok(())
}
