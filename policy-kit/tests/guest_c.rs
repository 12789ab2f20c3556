//! The C example guest (`examples/guest-c`), built here from source as the README's authoring
//! loop does (wit-bindgen's C bindings, clang and wasm-ld, no libc, no WASI), then run through
//! the real sandbox: the import check, the conformance cases and its own fixtures.
//!
//! Never skipped: without clang, wasm-ld or wit-bindgen the build fails with one line naming the
//! install command (`.ci/run` installs all three).

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Result, anyhow};
use guest_build::c::{CGuest, build_c_component};
use host::sandbox::{Sandbox, SandboxLimits};
use policy_kit::{conformance, harness::Policy};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The component, built once per test binary.
fn component() -> Result<&'static [u8]> {
    static BUILT: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-c");
        let guest = CGuest {
            dir: &workspace().join("examples/guest-c"),
            wit: &workspace().join("wit"),
            world: "replicaset-policy",
            output: "guest-c",
        };
        build_c_component(&guest, &out).and_then(|path| Ok(std::fs::read(path)?)).map_err(|e| format!("{e:#}"))
    });
    built.as_deref().map_err(|e| anyhow!("building examples/guest-c: {e}"))
}

#[test]
fn the_c_guest_imports_only_log_and_the_contract_types() -> Result<()> {
    let bytes = component()?;
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, bytes).map_err(|e| anyhow!("{e:#}"))?;
    let mut imports: Vec<String> =
        component.component_type().imports(&engine).map(|(name, _)| name.to_string()).collect();
    imports.sort();
    assert_eq!(imports, ["log", "wasm-replicaset:policy/types@0.1.0"]);
    // And the host's own check agrees (it refuses any other import).
    let sandbox = Sandbox::new(SandboxLimits::default())?;
    let module = sandbox.compile(bytes)?;
    assert_eq!(module.contract_version, "0.1.0");
    Ok(())
}

#[test]
fn the_c_guest_passes_the_conformance_cases() -> Result<()> {
    let sandbox = Sandbox::new(SandboxLimits::default())?;
    let module = sandbox.compile(component()?)?;
    assert_eq!(conformance::check(&sandbox, &module)?, 9);
    Ok(())
}

#[test]
fn the_c_guest_meets_its_own_fixtures() -> Result<()> {
    let policy = Policy::from_bytes(component()?)?;
    let checked = policy.check_dir(&workspace().join("examples/guest-c/fixtures"))?;
    assert_eq!(checked, 9);
    Ok(())
}

#[test]
fn upstream_disagrees_only_where_the_c_guest_picks_other_victims() -> Result<()> {
    let error = Policy::embedded()?.check_dir(&workspace().join("examples/guest-c/fixtures")).unwrap_err().to_string();
    assert!(error.starts_with("1 of 9 fixtures failed:"), "{error}");
    assert!(error.contains("crowded-node-loses-first: delete: expected [\"a3\", \"a2\"]"), "{error}");
    Ok(())
}
