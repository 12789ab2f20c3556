//! Components the host must refuse at load time, picked by cargo feature: another world, a
//! WASI import, another contract version.

#[cfg(feature = "other-world")]
mod other {
    wit_bindgen::generate!({ world: "other", path: "wit-other" });
    struct Other;
    impl Guest for Other {
        fn hello() -> String {
            "hello".into()
        }
    }
    export!(Other);
}

#[cfg(any(feature = "wasi", feature = "next-contract"))]
mod policy {
    #[cfg(feature = "wasi")]
    wit_bindgen::generate!({ world: "policy-with-clock", path: "wit-wasi", generate_all });
    #[cfg(feature = "next-contract")]
    wit_bindgen::generate!({ world: "replicaset-policy", path: "wit-next" });

    use wasm_replicaset::policy::types;

    struct Policy;
    impl Guest for Policy {
        fn reconcile(snapshot: types::Snapshot) -> Result<types::Plan, types::ReconcileError> {
            #[cfg(feature = "wasi")]
            let _ = wasi::clocks::wall_clock::now();
            Err(types::ReconcileError::InvalidSnapshot(format!("{} pods", snapshot.pods.len())))
        }
        fn status_after_scale_error(
            _rs: types::ReplicaSet,
            status: types::ReplicaSetStatus,
            _message: String,
            _now: i64,
        ) -> types::ReplicaSetStatus {
            status
        }
    }
    export!(Policy);
}
