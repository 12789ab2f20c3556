//! The policy's only side channel: a few debug lines through the host's `log` import.
//!
//! Natively (unit tests, the host calling the policy in-process) there is no import to call:
//! wit-bindgen's native stub is `unreachable!()`, so logging compiles to nothing off wasm32.
//! Callers log a handful of lines per call, never one per pod.

/// Writes one debug line with integer fields.
pub(crate) fn debug(message: &str, fields: &[(&str, i64)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        crate::bindings::log(crate::types::Level::Debug, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (message, fields);
}
