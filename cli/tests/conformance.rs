//! `wasm-replicaset conformance` as CI runs it: a line per case, a summary, JUnit XML, and the
//! exit status; bad modules fail every case with the typed reason.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use anyhow::{Context, Result, ensure};

const BINARY: &str = env!("CARGO_BIN_EXE_wasm-replicaset");

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("conformance-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn conformance(module: &Path, extra: &[&str]) -> Result<Output> {
    std::process::Command::new(BINARY)
        .arg("conformance")
        .arg(module)
        .args(extra)
        .output()
        .context("running wasm-replicaset conformance")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn example_fixtures() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guest-newest-first/fixtures").display().to_string()
}

#[test]
fn a_good_module_passes_every_case_and_the_junit_file_says_so() -> Result<()> {
    let dir = scratch("good");
    let module = dir.join("newest-first.wasm");
    std::fs::write(&module, test_guests::NEWEST_FIRST)?;
    let junit = dir.join("junit.xml");
    let output = conformance(&module, &["--fixtures", &example_fixtures(), "--junit", junit.to_str().unwrap()])?;
    let out = stdout(&output);
    ensure!(output.status.success(), "{out}{}", String::from_utf8_lossy(&output.stderr));
    ensure!(out.lines().filter(|l| l.starts_with("PASS  ")).count() == 11, "{out}");
    ensure!(out.contains("PASS  conformance/large") && out.contains("/newest-goes-first"), "{out}");
    ensure!(
        out.lines().last() == Some(out.lines().last().unwrap()) && out.contains("11 cases: 11 passed, 0 failed"),
        "{out}"
    );
    let xml = std::fs::read_to_string(&junit)?;
    ensure!(xml.contains("tests=\"11\" failures=\"0\"") && xml.matches("<testcase ").count() == 11, "{xml}");
    Ok(())
}

#[test]
fn a_fixture_the_module_disagrees_with_fails_the_run() -> Result<()> {
    let dir = scratch("disagrees");
    let module = dir.join("default.wasm");
    std::fs::write(&module, host::embedded::DEFAULT_POLICY)?;
    let output = conformance(&module, &["--fixtures", &example_fixtures()])?;
    let out = stdout(&output);
    ensure!(output.status.code() == Some(1), "{out}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL  ")).collect();
    ensure!(
        failed.len() == 1
            && failed[0].contains("newest-goes-first")
            && failed[0].contains("mismatch: delete: expected"),
        "{out}"
    );
    ensure!(out.contains("11 cases: 10 passed, 1 failed"), "{out}");
    Ok(())
}

#[test]
fn bad_modules_fail_every_case_with_the_typed_reason() -> Result<()> {
    let dir = scratch("bad");
    let cases: [(&str, &[u8], &str); 4] = [
        ("text", b"#!/bin/sh\necho hello\n", "not_wasm: the module does not load: not a WebAssembly file"),
        ("core", b"\0asm\x01\0\0\0", "core_module: the module does not load: a core WebAssembly module"),
        ("other-world", test_guests::OTHER_WORLD, "wrong_world: the module does not load: does not implement world"),
        ("traps", test_guests::PANIC, "trap: trapped"),
    ];
    for (name, bytes, reason) in cases {
        let module = dir.join(format!("{name}.wasm"));
        std::fs::write(&module, bytes)?;
        let junit = dir.join(format!("{name}.xml"));
        let output = conformance(&module, &["--junit", junit.to_str().unwrap()])?;
        let out = stdout(&output);
        ensure!(output.status.code() == Some(1), "{name}: {out}");
        let cases: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL  conformance/")).collect();
        ensure!(cases.len() == 9, "{name}: every case fails: {out}");
        ensure!(cases.iter().all(|l| l.contains(reason)), "{name}: each case names {reason:?}: {out}");
        let xml = std::fs::read_to_string(&junit)?;
        let label = reason.split(':').next().unwrap();
        ensure!(xml.matches(&format!("<failure type=\"{label}\"")).count() == 9, "{name}: {xml}");
    }
    Ok(())
}

#[test]
fn a_missing_module_file_is_one_line_naming_it() -> Result<()> {
    let output = conformance(Path::new("/no/such/module.wasm"), &[])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(1)
            && stderr.trim() == "error: reading /no/such/module.wasm: No such file or directory (os error 2)",
        "{stderr}"
    );
    Ok(())
}
