//! Builds every test guest as a component into OUT_DIR (see src/lib.rs for what each does).
use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let here = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = here.join("../..").canonicalize()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let wit = workspace.join("wit");
    let misbehaving = here.join("misbehaving");
    let foreign = here.join("foreign");
    let guest_src = workspace.join("guest-replicaset/src");
    for behaviour in ["spin", "oom", "panic", "bad-plan", "slow", "trap-on-boom", "stateful"] {
        guest_build::build_component(
            &guest_build::Guest {
                workspace: &workspace,
                package: "misbehaving-guest",
                features: &[behaviour],
                output: behaviour,
                watch: &[&misbehaving, &wit, &guest_src],
            },
            &out_dir,
        )?;
    }
    // The second example guest, built exactly as the host builds the default one.
    let example = workspace.join("examples/guest-newest-first");
    guest_build::build_component(
        &guest_build::Guest {
            workspace: &workspace,
            package: "guest-newest-first",
            features: &[],
            output: "newest-first",
            watch: &[&example.join("src"), &example.join("Cargo.toml"), &guest_src, &wit],
        },
        &out_dir,
    )?;
    for kind in ["other-world", "wasi", "next-contract"] {
        guest_build::build_component(
            &guest_build::Guest {
                workspace: &workspace,
                package: "foreign-guest",
                features: &[kind],
                output: kind,
                watch: &[&foreign],
            },
            &out_dir,
        )?;
    }
    Ok(())
}
