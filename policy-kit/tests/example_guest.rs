//! The harness API as a guest author uses it: load a component, run its fixtures.

use std::path::Path;

use policy_kit::harness::Policy;

#[test]
fn the_example_guest_meets_its_own_fixtures() -> anyhow::Result<()> {
    // A guest author loads their own built component the same way:
    // `Policy::from_file("target/wasm-guests/components/guest-newest-first.wasm".as_ref())`.
    let policy = Policy::from_bytes(test_guests::NEWEST_FIRST)?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guest-newest-first/fixtures");
    let checked = policy.check_dir(&fixtures)?;
    assert_eq!(checked, 2);
    Ok(())
}

#[test]
fn the_default_policy_disagrees_with_the_example_guests_ranking() -> anyhow::Result<()> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guest-newest-first/fixtures");
    let err = Policy::embedded()?.check_dir(&fixtures).unwrap_err().to_string();
    assert!(err.contains("1 of 2 fixtures failed") && err.contains("newest-goes-first"), "{err}");
    Ok(())
}
