//! `cargo run -p guest-build -- <package> [--out DIR]`: builds a guest crate of this workspace into
//! a component, exactly as the host's build script builds the default policy, and prints its path.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

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
    let mut args = std::env::args().skip(1);
    let Some(package) = args.next().filter(|a| !a.starts_with('-')) else {
        bail!("usage: cargo run -p guest-build -- <guest package> [--out DIR]");
    };
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    let out_dir = match (args.next().as_deref(), args.next()) {
        (Some("--out"), Some(dir)) => PathBuf::from(dir),
        (None, _) => workspace.join("target/wasm-guests/components"),
        _ => bail!("usage: cargo run -p guest-build -- <guest package> [--out DIR]"),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = guest_build::build_component(
        &guest_build::Guest { workspace: &workspace, package: &package, features: &[], output: &package, watch: &[] },
        &out_dir,
    )?;
    let size = std::fs::metadata(&path)?.len();
    println!("{} ({} KB)", path.display(), size / 1024);
    Ok(())
}
