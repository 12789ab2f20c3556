#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from the
# published Go modules into a cache outside the repository. Idempotent: a binary already built for
# this version is kept. Prints the bin directory on its last line.
#
#   tests/controlplane/build.sh            # build (first run: many minutes on 2 cores)
#   KUBEBUILDER_ASSETS=/dir tests/controlplane/build.sh   # use prebuilt etcd + kube-apiserver there
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...` is refused because k8s.io/kubernetes
# has replace directives, and requiring it as a dependency asks for its staging modules at v0.0.0,
# which are not served. Every staging module is published as v0.Y.Z for Kubernetes v1.Y.Z
# (kubernetes/kubernetes#79384), so our own main module maps each one to that version.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
PROJECT=wasm-replicaset
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/$PROJECT/k8s-$K8S_VERSION"
BIN="$CACHE_ROOT/bin"
SRC="$CACHE_ROOT/src"

log() { printf '[controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in etcd kube-apiserver; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $b" >&2; exit 1; }
  done
  log "using prebuilt binaries from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS (build skipped)"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

command -v go >/dev/null || { echo "go is not installed; install Go >= 1.26" >&2; exit 1; }
mkdir -p "$BIN" "$SRC/k8s" "$SRC/etcd"

# One build at a time per cache: a second invocation (another shell, CI step or engineer) waits
# for the first instead of racing it on the same files, then finds everything built.
if command -v flock >/dev/null; then
  exec 9>"$CACHE_ROOT/.build.lock"
  if ! flock -n 9; then
    log "another build.sh is building into $CACHE_ROOT; waiting for it"
    flock 9
  fi
fi
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

# --- etcd -------------------------------------------------------------------------------------
if [[ -x "$BIN/etcd" && "$(cat "$BIN/.etcd-version" 2>/dev/null)" == "$ETCD_VERSION" ]]; then
  log "etcd $ETCD_VERSION already built"
else
  log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3 through etcdmain.Main)"
  cd "$SRC/etcd"
  cat > go.mod <<GOMOD
module local/etcdbin

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > main.go <<'GO'
// Command etcd is upstream's server/main.go: etcd's server is published as a library module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  echo "$ETCD_VERSION" > "$BIN/.etcd-version"
  log "etcd built"
fi

# --- Kubernetes --------------------------------------------------------------------------------
K8S_CMDS=(kube-apiserver kube-controller-manager kubectl)
need_k8s=0
for c in "${K8S_CMDS[@]}"; do
  [[ -x "$BIN/$c" && "$(cat "$BIN/.$c-version" 2>/dev/null)" == "$K8S_VERSION" ]] || need_k8s=1
done
if [[ $need_k8s == 0 ]]; then
  log "kubernetes $K8S_VERSION binaries already built"
else
  cd "$SRC/k8s"
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  staging_version="v0.${K8S_VERSION#v1.}"
  log "reading the served go.mod of k8s.io/kubernetes@$K8S_VERSION"
  dl_json="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1)" || true
  gomod_path="$(printf '%s\n' "$dl_json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
  [[ -n "$gomod_path" && -f "$gomod_path" ]] || { echo "cannot download k8s.io/kubernetes@$K8S_VERSION: $dl_json" >&2; exit 1; }
  go_line="$(grep -m1 '^go ' "$gomod_path")"
  # Every `k8s.io/X => ./staging/src/k8s.io/X` line becomes `k8s.io/X => k8s.io/X v0.Y.Z`.
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/src/.*#\1#p' "$gomod_path")"
  [[ -n "$staging" ]] || { echo "no staging replace block found in $gomod_path" >&2; exit 1; }
  {
    echo "module local/k8sbins"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "resolving modules ($(echo "$staging" | wc -w) staging modules mapped to $staging_version); this downloads several hundred MB once"
  go mod tidy
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${K8S_CMDS[@]}"; do
    if [[ -x "$BIN/$c" && "$(cat "$BIN/.$c-version" 2>/dev/null)" == "$K8S_VERSION" ]]; then
      log "$c $K8S_VERSION already built"; continue
    fi
    log "building $c $K8S_VERSION (the first one takes the longest; later ones reuse the Go build cache)"
    start=$SECONDS
    go build -trimpath -tags tools -ldflags "$ldflags" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$BIN/$c.tmp" "$BIN/$c"
    echo "$K8S_VERSION" > "$BIN/.$c-version"
    log "$c built in $((SECONDS - start)) s"
  done
fi

"$BIN/kube-apiserver" --version >&2
"$BIN/etcd" --version | head -1 >&2
echo "$BIN"
