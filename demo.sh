#!/usr/bin/env bash
# The main job: a live cluster (kube-scheduler, kwok fake nodes), the controller (wasm-replicaset
# run) with its embedded policy, a ReplicaSet scaled up, down and drained, narrated. Builds what
# it needs first (the first run takes ~25 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
tests/controlplane/build.sh >/dev/null
exec cargo run --quiet --locked -p tests --bin demo
