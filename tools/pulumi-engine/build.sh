#!/usr/bin/env bash
# Build (or find) the Pulumi engine for edgefabric and link it into <repo>/.tools/bin.
#
#   tools/pulumi-engine/build.sh            # use a cached/compatible engine, else build
#   tools/pulumi-engine/build.sh --force    # rebuild even if a cached build exists
#   tools/pulumi-engine/build.sh --check    # exit 0 if an engine is ready, 1 if not (no build)
#
# What it installs into .tools/bin (symlinks into the build cache):
#   pulumi                          github.com/pulumi/pulumi/pkg/v3/cmd/pulumi, built from the Go proxy
#   pulumi-language-python          ./cmd/pulumi-language-python (our host: pulumi's own host module
#                                   is not served by the proxy; see the README there)
#   pulumi-language-python-exec     from the sdk/v3 module zip (python/cmd/)
#   pulumi-resource-pulumi-python   from the sdk/v3 module zip (python/dist/): dynamic-provider shim
#
# The build lives in ${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}/engine/<version>/ so that a fresh
# clone on the same machine reuses it; Go's own module and build caches are the defaults.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode="${1:-}"
case "$mode" in ""|--force|--check) ;; *) echo "usage: $0 [--force|--check]" >&2; exit 2;; esac

# The engine release is the pkg/v3 version pinned in go.mod: one source of truth.
version="$(awk '$1 == "github.com/pulumi/pulumi/pkg/v3" {print $2}' "$here/go.mod")"
if [[ -z "$version" ]]; then
  echo "engine: cannot read the github.com/pulumi/pulumi/pkg/v3 version from $here/go.mod" >&2
  exit 1
fi
# The oldest CLI we accept from PATH: the Python SDK pinned in requirements.txt. A CLI newer than
# the SDK is fine (the engine keeps protocol compatibility with older SDKs); an older one is not.
sdk_version="$(sed -n 's/^pulumi==\([0-9.]*\).*/\1/p' "$repo/requirements.txt" | head -n1)"
sdk_version="${sdk_version:-${version#v}}"

cache_root="${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}/engine"
dest="$cache_root/$version"
bin_dir="$repo/.tools/bin"
tools=(pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python)

log() { printf '[engine %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Hash of everything that goes into the build: a change to the host's source or the pins rebuilds.
src_hash() {
  (cd "$here" && cat go.mod go.sum build.sh $(find cmd -type f -name '*.go' | LC_ALL=C sort)) \
    | sha256sum | cut -c1-16
}

# version_ge A B: true if semver A >= B (both without a leading v).
version_ge() { [[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" == "$2" ]]; }

cli_version() { "$1" version 2>/dev/null | head -n1 | tr -d '[:space:]' | sed 's/^v//'; }

cached_ok() {
  local stamp="$dest/stamp"
  [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$version $(src_hash)" ]] || return 1
  local t
  for t in "${tools[@]}"; do [[ -x "$dest/bin/$t" ]] || return 1; done
  [[ "$(cli_version "$dest/bin/pulumi")" == "${version#v}" ]]
}

link_into_repo() {
  mkdir -p "$bin_dir"
  local t
  for t in "${tools[@]}"; do ln -sfn "$dest/bin/$t" "$bin_dir/$t"; done
}

# A compatible pulumi on PATH (not our own .tools/bin), e.g. from the official installer, which ships
# the python language host and the dynamic-provider shim next to it.
path_pulumi() {
  local p d
  while IFS= read -r p; do
    d="$(cd "$(dirname "$p")" && pwd)"
    [[ "$d" == "$bin_dir" ]] && continue
    [[ -x "$d/pulumi-language-python" ]] || continue
    local v; v="$(cli_version "$p")"
    if [[ "$v" == 3.* ]] && version_ge "$v" "$sdk_version"; then echo "$p $v"; return 0; fi
  done < <(type -ap pulumi 2>/dev/null || true)
  return 1
}

if [[ "$mode" != "--force" ]]; then
  if cached_ok; then
    link_into_repo
    log "pulumi $version ready (cached build in $dest/bin, linked into .tools/bin)"
    exit 0
  fi
  if found="$(path_pulumi)"; then
    # Links to an older build in .tools/bin would shadow it (engine-env puts .tools/bin first).
    for t in "${tools[@]}"; do [[ -L "$bin_dir/$t" ]] && rm -f "$bin_dir/$t"; done
    log "using pulumi ${found#* } from PATH: ${found%% *} (>= $sdk_version, ships pulumi-language-python)"
    exit 0
  fi
fi
if [[ "$mode" == "--check" ]]; then
  log "no engine: neither a cached build of $version nor a compatible pulumi on PATH"
  exit 1
fi

if ! command -v go >/dev/null 2>&1; then
  echo "engine: Go is needed to build the Pulumi CLI (go.mod asks for $(awk '$1=="go"{print $2}' "$here/go.mod") or newer)" >&2
  exit 1
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
log "waiting for the build lock ($cache_root/.lock)"
flock 9
# Another build may have finished while we waited.
if [[ "$mode" != "--force" ]] && cached_ok; then
  link_into_repo
  log "pulumi $version ready (built by a concurrent run)"
  exit 0
fi

gomodcache="$(go env GOMODCACHE)"
gocache="$(go env GOCACHE)"
du_mb() { local v; v="$(du -sm "$1" 2>/dev/null | cut -f1)"; echo "${v:-0}"; }
mod_before="$(du_mb "$gomodcache")"; cache_before="$(du_mb "$gocache")"
start=$(date +%s)

export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
ldflags="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version"
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"; [[ -n "${ticker:-}" ]] && kill "$ticker" 2>/dev/null || true' EXIT

log "building pulumi $version from Go modules ($(go version | cut -d' ' -f3), $(nproc) cores)"
log "a cold build downloads ~1.6 GB of modules and compiles for several minutes; progress every 30 s"
(
  while sleep 30 >/dev/null 2>&1; do
    log "... still building ($(( $(date +%s) - start )) s, Go build cache $(du_mb "$gocache") MB)"
  done
) &
ticker=$!

cd "$here"
log "step 1/4: downloading modules"
go mod download
log "step 2/4: go build github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
log "step 3/4: go build ./cmd/pulumi-language-python"
go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/pulumi-language-python" ./cmd/pulumi-language-python
kill "$ticker" 2>/dev/null || true; ticker=""

log "step 4/4: python runtime helpers from the sdk/v3 module zip"
sdk_dir="$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$tmp/bin/pulumi-language-python-exec"
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$tmp/bin/pulumi-resource-pulumi-python"

got="$(cli_version "$tmp/bin/pulumi")"
if [[ "$got" != "${version#v}" ]]; then
  echo "engine: built pulumi reports version '$got', expected ${version#v}" >&2
  exit 1
fi
echo "$version $(src_hash)" >"$tmp/stamp"
rm -rf "$dest.old"
[[ -d "$dest" ]] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old"
trap - EXIT
link_into_repo

elapsed=$(( $(date +%s) - start ))
log "pulumi $version built in ${elapsed} s into $dest/bin ($(du -sh "$dest/bin" | cut -f1)), linked into .tools/bin"
log "disk: Go module cache +$(( $(du_mb "$gomodcache") - mod_before )) MB ($gomodcache)," \
    "Go build cache +$(( $(du_mb "$gocache") - cache_before )) MB ($gocache)"
