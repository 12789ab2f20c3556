//! Builds a policy written in C into a component: bindings from `wit-bindgen c`, compiled and
//! linked by clang and wasm-ld for `wasm32-unknown-unknown` with no libc and no WASI, then
//! encoded with `wit-component` exactly as the Rust guests are.
//!
//! The guest provides what libc-free C needs itself (an allocator behind `cabi_realloc`,
//! `memcpy` and friends); bulk-memory instructions let the compiler lower copies and fills to
//! `memory.copy` / `memory.fill` instead of calling back into those functions.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The wit-bindgen the C bindings are generated with: the same release as the Rust guests'
/// `wit-bindgen` crate, so both sides agree on the canonical ABI.
pub const WIT_BINDGEN_VERSION: &str = "0.61.1";

/// Linear-memory stack for the C guest, as for the Rust guests.
const STACK_BYTES: u32 = 256 * 1024;

/// A C guest: `dir/src/*.c` (and headers in `dir/include`), implementing `world` of `wit`.
pub struct CGuest<'a> {
    /// The guest's directory.
    pub dir: &'a Path,
    /// The WIT directory of the contract.
    pub wit: &'a Path,
    /// The world to implement.
    pub world: &'a str,
    /// The component's file name (without `.wasm`) in the output directory.
    pub output: &'a str,
}

/// The tools a C guest needs, found on this machine.
pub struct CTools {
    /// `wit-bindgen` at [`WIT_BINDGEN_VERSION`].
    pub wit_bindgen: PathBuf,
    /// A clang that targets wasm32.
    pub clang: PathBuf,
}

impl CTools {
    /// Finds the tools, or says in one line which is missing and how to install it.
    pub fn locate() -> Result<Self> {
        let clang =
            on_path("clang").context("clang not found on PATH; install it with `apt-get install -y clang lld`")?;
        if on_path("wasm-ld").is_none() {
            bail!("wasm-ld (LLVM's wasm linker) not found on PATH; install it with `apt-get install -y lld`");
        }
        let wit_bindgen = tools_dir()
            .map(|dir| dir.join("wit-bindgen"))
            .filter(|path| path.is_file())
            .or_else(|| on_path("wit-bindgen"))
            .with_context(install_wit_bindgen)?;
        let version = Command::new(&wit_bindgen).arg("--version").output().context("running wit-bindgen --version")?;
        let version = String::from_utf8_lossy(&version.stdout);
        if !version.split_whitespace().any(|word| word == WIT_BINDGEN_VERSION) {
            bail!(
                "{} is `{}`, not {WIT_BINDGEN_VERSION}; {}",
                wit_bindgen.display(),
                version.trim(),
                install_wit_bindgen()
            );
        }
        Ok(Self { wit_bindgen, clang })
    }
}

/// Where `.ci/run` installs tools: `$WASM_REPLICASET_TOOLS/bin`, else
/// `${XDG_CACHE_HOME:-~/.cache}/wasm-replicaset/tools/bin`.
pub fn tools_dir() -> Option<PathBuf> {
    if let Some(root) = env::var_os("WASM_REPLICASET_TOOLS").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(root).join("bin"));
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("wasm-replicaset/tools/bin"))
}

fn install_wit_bindgen() -> String {
    format!(
        "wit-bindgen {WIT_BINDGEN_VERSION} not found; install it with `cargo install --locked --root ~/.cache/wasm-replicaset/tools wit-bindgen-cli --version {WIT_BINDGEN_VERSION} --no-default-features --features c` (what .ci/run does)"
    )
}

fn on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// Builds `guest` into `out_dir/<output>.wasm` (the generated bindings and the core module go to
/// `out_dir/<output>-build/`) and returns the component's path.
pub fn build_c_component(guest: &CGuest<'_>, out_dir: &Path) -> Result<PathBuf> {
    let tools = CTools::locate()?;
    let work = out_dir.join(format!("{}-build", guest.output));
    let bindings = work.join("bindings");
    std::fs::create_dir_all(&bindings).with_context(|| format!("creating {}", bindings.display()))?;
    run(Command::new(&tools.wit_bindgen)
        .args(["c", "--world", guest.world, "--out-dir"])
        .arg(&bindings)
        .arg(guest.wit))?;
    let core = work.join("core.wasm");
    let mut clang = Command::new(&tools.clang);
    clang
        .args(["--target=wasm32-unknown-unknown", "-nostdlib", "-ffreestanding", "-std=c11", "-O2"])
        .args(["-mbulk-memory", "-Wall", "-Wextra", "-Werror"])
        // The generated code has unused parameters and casts we do not own.
        .args(["-Wno-unused-parameter", "-Wno-missing-field-initializers"])
        .arg("-I")
        .arg(guest.dir.join("include"))
        .arg("-I")
        .arg(&bindings)
        .args(["-Wl,--no-entry", &format!("-Wl,-z,stack-size={STACK_BYTES}"), "-Wl,--strip-debug"])
        .args(c_files(&guest.dir.join("src"))?)
        .args(c_files(&bindings)?)
        .arg(component_type_object(&bindings)?)
        .arg("-o")
        .arg(&core);
    run(&mut clang)?;
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .context("the C guest's core module has no usable component-type section")?
        .validate(true)
        .encode()
        .context("encoding the C guest as a component")?;
    let out = out_dir.join(format!("{}.wasm", guest.output));
    std::fs::write(&out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// The `*.c` files of `dir`, sorted.
fn c_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .c files in {}", dir.display());
    }
    Ok(files)
}

/// wit-bindgen's `<world>_component_type.o`: the custom section wit-component reads the world from.
fn component_type_object(bindings: &Path) -> Result<PathBuf> {
    std::fs::read_dir(bindings)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("_component_type.o"))
        .with_context(|| format!("wit-bindgen wrote no *_component_type.o into {}", bindings.display()))
}

/// Runs `command`; a failure is an error with the command and its output.
fn run(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let output = command.output().with_context(|| format!("running {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_installs_the_wit_bindgen_this_builder_asks_for() {
        let script = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/run")).unwrap();
        assert!(script.contains(&format!("WIT_BINDGEN_VERSION={WIT_BINDGEN_VERSION}\n")), "{script}");
    }
}
