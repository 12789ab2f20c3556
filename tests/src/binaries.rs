//! Locating the control-plane binaries (and the live cluster's kube-scheduler, kwok and kwok's stage files): `$KUBEBUILDER_ASSETS`, else the cache dir that `tests/controlplane/build.sh` fills.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The Kubernetes version `tests/controlplane/build.sh` builds by default; `K8S_VERSION` overrides
/// it (in both places).
pub const DEFAULT_K8S_VERSION: &str = "v1.37.2";

/// The Kubernetes version whose binaries the harness uses: `$K8S_VERSION` or
/// [`DEFAULT_K8S_VERSION`].
pub fn k8s_version() -> String {
    std::env::var("K8S_VERSION").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_K8S_VERSION.to_string())
}

/// The directory `tests/controlplane/build.sh` writes to:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/wasm-replicaset/k8s-<version>/bin`.
pub fn cache_bin_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"),
        PathBuf::from,
    );
    cache.join("wasm-replicaset").join(format!("k8s-{}", k8s_version())).join("bin")
}

/// The directory binaries are taken from: `$KUBEBUILDER_ASSETS` if set, else [`cache_bin_dir`].
pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty()).map_or_else(cache_bin_dir, PathBuf::from)
}

/// Paths of the control-plane binaries: etcd and kube-apiserver from one directory;
/// kube-controller-manager, kubectl, kube-scheduler, kwok and `kwok-stages/` from it too if
/// present, else from a fallback directory.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
    fallback: Option<PathBuf>,
}

impl Binaries {
    /// Binaries in [`default_bin_dir`]. With `$KUBEBUILDER_ASSETS` set (envtest assets have no
    /// kube-controller-manager), everything but etcd and kube-apiserver falls back to
    /// [`cache_bin_dir`].
    pub fn locate() -> Self {
        let dir = default_bin_dir();
        let cache = cache_bin_dir();
        let fallback = (dir != cache).then_some(cache);
        Self { dir, fallback }
    }

    /// Binaries in `dir` only.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), fallback: None }
    }

    fn get_or_fallback(&self, name: &str) -> Result<PathBuf> {
        self.with_fallback(|binaries| binaries.get(name))
    }

    /// `find` in [`Binaries::dir`], else in the fallback directory; the error names the first.
    fn with_fallback(&self, find: impl Fn(&Self) -> Result<PathBuf>) -> Result<PathBuf> {
        match (find(self), &self.fallback) {
            (Ok(path), _) => Ok(path),
            (Err(e), None) => Err(e),
            (Err(e), Some(fallback)) => find(&Self::in_dir(fallback)).map_err(|_| e),
        }
    }

    /// The directory searched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of executable `name` in the directory, or the error
    /// "`name` not found in `dir`; build the control plane with `tests/controlplane/build.sh`".
    pub fn get(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o111 == 0 {
                    bail!("{} is not executable", path.display());
                }
                Ok(path)
            }
            _ => bail!(
                "{name} not found in {}; build the control plane with `tests/controlplane/build.sh`",
                self.dir.display()
            ),
        }
    }

    /// `etcd`.
    pub fn etcd(&self) -> Result<PathBuf> {
        self.get("etcd")
    }

    /// `kube-apiserver`.
    pub fn kube_apiserver(&self) -> Result<PathBuf> {
        self.get("kube-apiserver")
    }

    /// `kube-controller-manager` (from the fallback directory if not in [`Binaries::dir`]).
    pub fn kube_controller_manager(&self) -> Result<PathBuf> {
        self.get_or_fallback("kube-controller-manager")
    }

    /// `kubectl` (from the fallback directory if not in [`Binaries::dir`]).
    pub fn kubectl(&self) -> Result<PathBuf> {
        self.get_or_fallback("kubectl")
    }

    /// `kube-scheduler` (from the fallback directory if not in [`Binaries::dir`]).
    pub fn kube_scheduler(&self) -> Result<PathBuf> {
        self.get_or_fallback("kube-scheduler")
    }

    /// `kwok`, the fake kubelet (from the fallback directory if not in [`Binaries::dir`]).
    pub fn kwok(&self) -> Result<PathBuf> {
        self.get_or_fallback("kwok")
    }

    /// `toxiproxy`, the fault-injecting TCP proxy's server (from the fallback directory if not in
    /// [`Binaries::dir`]).
    pub fn toxiproxy(&self) -> Result<PathBuf> {
        self.get_or_fallback("toxiproxy")
    }

    /// `kwok-stages/`: kwok's own Stage files (kwok has none built in), from the same directory
    /// as [`Binaries::kwok`]; e.g. `node/fast/node-initialize.yaml`.
    pub fn kwok_stages(&self) -> Result<PathBuf> {
        self.with_fallback(Self::stage_dir)
    }

    fn stage_dir(&self) -> Result<PathBuf> {
        let path = self.dir.join(KWOK_STAGES);
        if path.join(KWOK_NODE_INITIALIZE).is_file() {
            return Ok(path);
        }
        bail!(
            "{KWOK_STAGES}/{KWOK_NODE_INITIALIZE} not found in {}; build the control plane with \
             `tests/controlplane/build.sh`",
            self.dir.display()
        )
    }
}

/// The directory, beside the binaries, that holds kwok's Stage files.
const KWOK_STAGES: &str = "kwok-stages";

/// kwok's stage that makes a fake node Ready, relative to [`Binaries::kwok_stages`].
pub const KWOK_NODE_INITIALIZE: &str = "node/fast/node-initialize.yaml";

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kcm_and_kubectl_fall_back_but_etcd_and_the_apiserver_do_not() {
        let root = std::env::temp_dir().join(format!("harness-binaries-test-{}", std::process::id()));
        let (assets, cache) = (root.join("assets"), root.join("cache"));
        std::fs::create_dir_all(&assets).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        for name in ["kubectl", "etcd", "not-executable"] {
            let path = cache.join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            let mode = if name == "not-executable" { 0o644 } else { 0o755 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let binaries = Binaries { dir: assets.clone(), fallback: Some(cache.clone()) };
        assert_eq!(binaries.kubectl().unwrap(), cache.join("kubectl"));
        let etcd = binaries.etcd().unwrap_err().to_string();
        assert_eq!(
            etcd,
            format!(
                "etcd not found in {}; build the control plane with `tests/controlplane/build.sh`",
                assets.display()
            )
        );
        let kcm = binaries.kube_controller_manager().unwrap_err().to_string();
        assert!(kcm.contains(&assets.display().to_string()), "{kcm}");
        let not_exec = Binaries::in_dir(&cache).get("not-executable").unwrap_err();
        assert!(not_exec.to_string().ends_with("is not executable"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_live_cluster_binaries_and_kwok_stages_fall_back_or_name_the_build_script() {
        let root = std::env::temp_dir().join(format!("harness-binaries-live-test-{}", std::process::id()));
        let (assets, cache) = (root.join("assets"), root.join("cache"));
        std::fs::create_dir_all(&assets).unwrap();
        std::fs::create_dir_all(cache.join(KWOK_STAGES).join("node/fast")).unwrap();
        std::fs::write(cache.join(KWOK_STAGES).join(KWOK_NODE_INITIALIZE), "kind: Stage\n").unwrap();
        let kwok = cache.join("kwok");
        std::fs::write(&kwok, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&kwok, std::fs::Permissions::from_mode(0o755)).unwrap();

        let binaries = Binaries { dir: assets.clone(), fallback: Some(cache.clone()) };
        assert_eq!(binaries.kwok().unwrap(), kwok);
        assert_eq!(binaries.kwok_stages().unwrap(), cache.join(KWOK_STAGES));
        let toxiproxy = binaries.toxiproxy().unwrap_err().to_string();
        assert!(toxiproxy.starts_with("toxiproxy not found in "), "{toxiproxy}");
        assert!(toxiproxy.ends_with("build the control plane with `tests/controlplane/build.sh`"), "{toxiproxy}");
        let scheduler = binaries.kube_scheduler().unwrap_err().to_string();
        assert_eq!(
            scheduler,
            format!(
                "kube-scheduler not found in {}; build the control plane with `tests/controlplane/build.sh`",
                assets.display()
            )
        );
        let stages = Binaries::in_dir(&assets).kwok_stages().unwrap_err().to_string();
        assert!(!stages.contains('\n'), "one line: {stages}");
        assert!(stages.contains(&assets.display().to_string()), "{stages}");
        assert!(stages.ends_with("build the control plane with `tests/controlplane/build.sh`"), "{stages}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
