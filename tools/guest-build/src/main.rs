//! `cargo run -p guest-build -- <package> [--out DIR]`: builds a guest crate of this workspace into
//! a component, exactly as the host's build script builds the default policy, and prints its path.
//! `cargo run -p guest-build -- --c <dir> [--out DIR]` builds a C guest (see `guest_build::c`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo run -p guest-build -- <guest package> [--out DIR] | --c <guest dir> [--out DIR]";

fn main() -> std::process::ExitCode {
    match build() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn build() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    let (what, rest) = match args.as_slice() {
        [flag, dir, rest @ ..] if flag == "--c" => (Guest::C(PathBuf::from(dir)), rest),
        [package, rest @ ..] if !package.starts_with('-') => (Guest::Rust(package.clone()), rest),
        _ => bail!(USAGE),
    };
    let out_dir = match rest {
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        [] => workspace.join("target/wasm-guests/components"),
        _ => bail!(USAGE),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = match what {
        Guest::Rust(package) => guest_build::build_component(
            &guest_build::Guest {
                workspace: &workspace,
                package: &package,
                features: &[],
                output: &package,
                watch: &[],
            },
            &out_dir,
        )?,
        Guest::C(dir) => build_c(&workspace, &dir, &out_dir)?,
    };
    let size = std::fs::metadata(&path)?.len();
    println!("{} ({} KB)", path.display(), size / 1024);
    Ok(())
}

enum Guest {
    Rust(String),
    C(PathBuf),
}

fn build_c(workspace: &Path, dir: &Path, out_dir: &Path) -> Result<PathBuf> {
    let dir = dir.canonicalize().with_context(|| format!("{} is not a directory", dir.display()))?;
    let output = dir.file_name().context("the guest directory has no name")?.to_string_lossy().into_owned();
    let guest =
        guest_build::c::CGuest { dir: &dir, wit: &workspace.join("wit"), world: "replicaset-policy", output: &output };
    guest_build::c::build_c_component(&guest, out_dir)
}
