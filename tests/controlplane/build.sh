#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) and the live-cluster and fault-injection tools (kwok, toxiproxy) from the published Go
# modules into a cache outside the repository. Idempotent: a binary already built for
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
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.5.0}"
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
mkdir -p "$BIN" "$SRC/k8s"

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

# built NAME VERSION: whether $BIN/NAME exists and was built at VERSION.
built() { [[ -x "$BIN/$1" && "$(cat "$BIN/.$1-version" 2>/dev/null)" == "$2" ]]; }

# build_wrapped NAME MODULE VERSION PACKAGE: builds command PACKAGE of MODULE@VERSION into $BIN/NAME
# from a wrapper module of our own in $SRC/NAME (a tools.go pins the package for `go mod tidy`).
# A module with replace directives of its own cannot be `go install`ed; its own dependencies'
# versions must not meet another tool's either, hence one wrapper module per tool.
build_wrapped() {
  local name=$1 module=$2 version=$3 package=$4 start=$SECONDS
  if built "$name" "$version"; then log "$name $version already built"; return; fi
  log "building $name $version ($package)"
  mkdir -p "$SRC/$name" && cd "$SRC/$name"
  printf 'module local/%sbin\n\ngo 1.26.0\n\nrequire %s %s\n' "$name" "$module" "$version" > go.mod
  printf '//go:build tools\n\n// Package tools pins the command this module builds.\npackage tools\n\nimport _ "%s"\n' "$package" > tools.go
  go mod tidy
  go build -trimpath -tags tools -ldflags "-s -w" -o "$BIN/$name.tmp" "$package"
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "$version" > "$BIN/.$name-version"
  log "$name built in $((SECONDS - start)) s"
}

# --- etcd -------------------------------------------------------------------------------------
# etcd's server is published as a library module; upstream's server/main.go is one call into it.
if built etcd "$ETCD_VERSION"; then
  log "etcd $ETCD_VERSION already built"
else
  log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3 through etcdmain.Main)"
  mkdir -p "$SRC/etcd" && cd "$SRC/etcd"
  printf 'module local/etcdbin\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
  cat > main.go <<'GO'
// Command etcd is upstream's server/main.go.
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
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
need_k8s=0
for c in "${K8S_CMDS[@]}"; do
  built "$c" "$K8S_VERSION" || need_k8s=1
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
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
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
    if built "$c" "$K8S_VERSION"; then
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

# --- kwok (fake nodes and kubelet-like pod lifecycles) -------------------------------------------
# The kwok binary has no built-in stages; the stage files ship in its module and are copied next
# to it, where the harness finds them.
build_wrapped kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
if [[ ! -d "$BIN/kwok-stages" || "$(cat "$BIN/kwok-stages/.version" 2>/dev/null)" != "$KWOK_VERSION" ]]; then
  stages="$(cd "$SRC/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
  [[ -d "$stages" ]] || { echo "kwok's stage files are missing from its module ($stages)" >&2; exit 1; }
  rm -rf "$BIN/kwok-stages" && cp -r "$stages" "$BIN/kwok-stages" && chmod -R u+w "$BIN/kwok-stages"
  echo "$KWOK_VERSION" > "$BIN/kwok-stages/.version"
  log "kwok stage files copied"
fi

# --- toxiproxy (fault-injecting TCP proxy) ----------------------------------------------------
build_wrapped toxiproxy github.com/Shopify/toxiproxy/v2 "$TOXIPROXY_VERSION" github.com/Shopify/toxiproxy/v2/cmd/server

"$BIN/kube-apiserver" --version >&2
# sed reads to the end (head would close the pipe early and fail the script under pipefail).
"$BIN/etcd" --version | sed -n 1p >&2
echo "$BIN"
