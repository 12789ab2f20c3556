//! Integration-test harness: a real etcd + kube-apiserver (one shared per test binary, or private ones), per-test namespaces, kube-controller-manager as the upstream reference, kubelet/scheduler stand-ins or a live cluster (kube-scheduler, kwok fake nodes), and cleanup of every started process.
//!
//! Typical use:
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let ns = tests::ns().await?; // shared control plane, fresh namespace
//! let pods = ns.api::<k8s_openapi::api::core::v1::Pod>();
//! # let _ = pods;
//! # Ok(())
//! # }
//! ```
//!
//! Two modes. The **bare** mode ([`shared`], [`ns`], [`ControlPlane`]) runs etcd and kube-apiserver
//! (RBAC authorization, `ServiceAccount` admission off, endpoint reconciler off), and on request
//! kube-controller-manager with only `replicaset-controller`. No kubelet, scheduler, garbage
//! collector or namespace controller, so:
//! - pods stay `Pending` until a test plays kubelet ([`pods::set_pod_running`], ...) or scheduler
//!   ([`pods::bind_pod`]);
//! - a pod bound to a node is deleted gracefully, waiting for a kubelet that never comes: delete it
//!   with `DeleteParams::default().grace_period(0)` (unbound pods go at once);
//! - deleting a ReplicaSet leaves its pods; foreground deletion never completes;
//! - namespaces are never finalized, so they are not deleted after tests;
//! - kube-controller-manager watches all namespaces: run it on a private [`ControlPlane`] so it
//!   cannot fight another test's controller over the shared one.
//!
//! The **live** mode ([`live::shared`], [`live::ns`], [`LiveCluster`]) adds, on top of a control
//! plane, kube-scheduler, kwok playing the kubelet of fake nodes (pods follow the
//! [`stages::Behaviour`] a test picks by annotation: Ready after a delay, crash-looping, failing,
//! slow to terminate) and kube-controller-manager with only node lifecycle and pod garbage
//! collection. Pods are scheduled, run and are deleted as on a real cluster; it costs a few
//! seconds more to start, so tests that need none of it stay in the bare mode. See [`live`].
//!
//! Environment:
//! - `KUBEBUILDER_ASSETS`: directory with etcd and kube-apiserver (kube-controller-manager,
//!   kubectl, kube-scheduler, kwok and `kwok-stages/` are taken from it if present, else from the
//!   build cache);
//! - `K8S_VERSION`: which cache `${XDG_CACHE_HOME:-$HOME/.cache}/wasm-replicaset/k8s-<v>/bin` to
//!   use (default [`DEFAULT_K8S_VERSION`], as `tests/controlplane/build.sh`);
//! - `HARNESS_KEEP_TMP=1`: keep data, certificates and logs under [`workdir::root`].
//! - `HARNESS_HOST_LOG=<filter>`: the `RUST_LOG` of every host process the harness starts
//!   (otherwise the host's default), e.g. `info,host=debug` for a failure's post-mortem.
//!
//! A missing binary is an error (tests fail, they never skip). Every process is stopped by PID on
//! drop, at exit (also after panicking tests), and by `PR_SET_PDEATHSIG` if the test binary is
//! killed; see [`process`]. Start any other long-running process a test needs (the controller
//! under test) with [`ManagedProcess::spawn_command`] to get the same guarantees.

pub mod audit;
pub mod bench;
pub mod binaries;
pub mod controller;
pub mod controlplane;
pub mod deploy;
pub mod differential;
pub mod faults;
pub mod host_process;
pub mod invariants;
pub mod kcm;
pub mod kubeconfig;
pub mod kubectl;
pub mod kwok;
pub mod live;
pub mod modules;
pub mod namespace;
pub mod pki;
pub mod pod_counter;
pub mod pods;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod scenes;
pub mod scheduler;
mod serving;
pub mod shared;
pub mod soak;
pub mod stages;
pub mod stall_proxy;
pub mod toxiproxy;
pub mod wait;
pub mod workdir;

pub use binaries::{Binaries, DEFAULT_K8S_VERSION, k8s_version};
pub use controlplane::{ControlPlane, ControlPlaneOptions};
pub use kcm::{KcmOptions, KubeControllerManager};
pub use kubectl::Kubectl;
pub use live::{LiveCluster, LiveOptions};
pub use namespace::TestNamespace;
pub use process::{ManagedProcess, pid_is_running, running_pids};
pub use shared::{ns, shared};
pub use wait::{consistently, eventually};
