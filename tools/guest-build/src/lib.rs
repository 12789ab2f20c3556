//! Builds guest crates of this workspace into WebAssembly components, from build scripts.
//!
//! A guest is compiled for `wasm32-unknown-unknown` (not `wasm32-wasip2`, whose std pulls in 13
//! WASI imports) with the workspace's `guest` profile, then the core module is encoded as a
//! component with `wit-component`, using the component-type section that `wit-bindgen` embeds.
//! The inner cargo uses its own target directory so it never waits on the outer build's lock.
//! Guests written in C are built by [`c`].

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

pub mod c;

const TARGET: &str = "wasm32-unknown-unknown";

/// Linear-memory stack for guests. The default 1 MiB makes every instance start with 17 pages;
/// 256 KiB keeps instantiation cheap and is ample for the policy's shallow call depth.
const GUEST_STACK_BYTES: u32 = 256 * 1024;

/// What to build and where to put it.
pub struct Guest<'a> {
    /// The workspace root.
    pub workspace: &'a Path,
    /// The guest's package name.
    pub package: &'a str,
    /// Cargo features to enable (test guests pick their misbehaviour this way).
    pub features: &'a [&'a str],
    /// The component's file name (without `.wasm`) in `out_dir`.
    pub output: &'a str,
    /// Paths whose change must rebuild the guest (its sources, the WIT, ...).
    pub watch: &'a [&'a Path],
}

/// Builds `guest.package` and writes the encoded component to `out_dir/<output>.wasm`,
/// returning that path.
pub fn build_component(guest: &Guest<'_>, out_dir: &Path) -> Result<PathBuf> {
    let Guest { workspace, package, features, output, watch } = *guest;
    for path in watch {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    ensure_target_installed()?;

    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from).join("wasm-guests");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "--profile", "guest", "--target", TARGET, "-p", package])
        .args(if features.is_empty() { vec![] } else { vec!["--features".to_string(), features.join(",")] })
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build (sanitizers, target-cpu, coverage) must not leak into wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        // `cargo clippy` on the host would otherwise lint (and `-D warnings`) the guest build too.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", format!("-C link-arg=-zstack-size={GUEST_STACK_BYTES}"))
        .status()
        .with_context(|| format!("running cargo to build guest {package}"))?;
    if !status.success() {
        bail!("building guest {package} for {TARGET} failed ({status})");
    }

    let core_path = target_dir.join(TARGET).join("guest").join(format!("{}.wasm", package.replace('-', "_")));
    let core = std::fs::read(&core_path).with_context(|| format!("reading {}", core_path.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&core)
        .with_context(|| format!("{package}: the core module has no usable component-type section"))?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {package} as a component"))?;
    let out = out_dir.join(format!("{output}.wasm"));
    std::fs::write(&out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

fn ensure_target_installed() -> Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib").join(TARGET).exists() {
        bail!("the Rust target {TARGET} is not installed; run `rustup target add {TARGET}`");
    }
    Ok(())
}
