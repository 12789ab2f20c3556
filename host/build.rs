//! Builds the default policy (`guest-replicaset`) as a component and embeds it in the host.
use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest.parent().expect("host/ sits in the workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let guest = workspace.join("guest-replicaset");
    guest_build::build_component(
        &guest_build::Guest {
            workspace: &workspace,
            package: "guest-replicaset",
            features: &[],
            output: "guest-replicaset",
            // The root manifest holds the `guest` profile.
            watch: &[
                &guest.join("src"),
                &guest.join("Cargo.toml"),
                &workspace.join("wit"),
                &workspace.join("Cargo.toml"),
            ],
        },
        &out_dir,
    )?;
    Ok(())
}
