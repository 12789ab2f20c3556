//! What a report says about where it was measured: the machine and the software versions.

use std::process::Command;

use crate::Binaries;

/// The machine: CPUs, CPU model, memory, kernel.
pub fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown CPU".into(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or_else(|| "?".into(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    vec![format!("Machine: {cores} CPUs (nproc), {model}, {mem} RAM, Linux {}", kernel.trim())]
}

fn first_line(program: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_string())
}

/// The Kubernetes binaries' versions and the host's commit and compiler.
pub fn versions() -> Vec<String> {
    let binaries = Binaries::locate();
    let apiserver =
        binaries.kube_apiserver().ok().and_then(|p| first_line(&p, &["--version"])).unwrap_or_else(|| "?".into());
    let kcm = binaries
        .kube_controller_manager()
        .ok()
        .and_then(|p| first_line(&p, &["--version"]))
        .unwrap_or_else(|| "?".into());
    let etcd = binaries.etcd().ok().and_then(|p| first_line(&p, &["--version"])).unwrap_or_else(|| "?".into());
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let rustc = first_line(std::path::Path::new("rustc"), &["--version"]).unwrap_or_else(|| "?".into());
    vec![
        format!("Kubernetes: kube-apiserver {apiserver}, kube-controller-manager {kcm}, etcd {etcd}"),
        format!(
            "Host: commit {commit}{} (release build), {rustc}",
            if dirty { " with uncommitted changes" } else { "" }
        ),
    ]
}
