#!/usr/bin/env bash
# Build (or find) the local Kubernetes control plane and link it into <repo>/.tools/bin.
#
#   tools/kubernetes/build.sh            # use the cached build, else build
#   tools/kubernetes/build.sh --force    # rebuild even if a cached build exists
#   tools/kubernetes/build.sh --check    # exit 0 if the binaries are ready, 1 if not (no build)
#
# What it installs (symlinks into the build cache, .tools/bin):
#   kube-apiserver, kube-controller-manager, kube-scheduler
#                   k8s.io/kubernetes/cmd/..., at the release pinned in go.mod (wrapper module here)
#   kwok            sigs.k8s.io/kwok/cmd/kwok@$kwok_version (go install: kwok's go.mod has no replaces)
# and kwok's Stage documents (node-initialize, node-heartbeat, pod-ready/complete/delete) copied
# from the kwok module into <cache>/stages/, for `kwok --config`.
# etcd is not built here: it is Debian's etcd-server (scripts/bootstrap.sh k8s).
#
# The build lives in ${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}/k8s/<version>/ so that a fresh
# clone on the same machine reuses it; Go's own module and build caches are the defaults.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode="${1:-}"
case "$mode" in ""|--force|--check) ;; *) echo "usage: $0 [--force|--check]" >&2; exit 2;; esac

# The Kubernetes release is the k8s.io/kubernetes version pinned in go.mod: one source of truth.
version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
if [[ -z "$version" ]]; then
  echo "k8s: cannot read the k8s.io/kubernetes version from $here/go.mod" >&2
  exit 1
fi
kwok_version="v0.8.0"
# kwok's stages used by devenv/kubernetes.py: directories under kustomize/stage/ in the kwok module.
stage_dirs=(node/fast node/heartbeat pod/fast)

cache_root="${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}/k8s"
dest="$cache_root/$version"
bin_dir="$repo/.tools/bin"
tools=(kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[k8s %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Hash of everything that goes into the build: a change to the pins or this script rebuilds.
src_hash() { (cd "$here" && cat go.mod go.sum build.sh) | sha256sum | cut -c1-16; }

stamp_line() { echo "$version kwok-$kwok_version $(src_hash)"; }

cached_ok() {
  [[ -f "$dest/stamp" ]] && [[ "$(cat "$dest/stamp")" == "$(stamp_line)" ]] || return 1
  local t
  for t in "${tools[@]}"; do [[ -x "$dest/bin/$t" ]] || return 1; done
  [[ -n "$(ls "$dest/stages/"*.yaml 2>/dev/null)" ]] || return 1
  [[ "$("$dest/bin/kube-apiserver" --version 2>/dev/null)" == "Kubernetes $version" ]]
}

link_into_repo() {
  mkdir -p "$bin_dir"
  local t
  for t in "${tools[@]}"; do ln -sfn "$dest/bin/$t" "$bin_dir/$t"; done
}

etcd_note() {
  if ! command -v etcd >/dev/null 2>&1 && [[ ! -x /usr/bin/etcd ]]; then
    log "note: etcd is not installed; run scripts/bootstrap.sh k8s (Debian's etcd-server)"
  fi
}

if [[ "$mode" != "--force" ]] && cached_ok; then
  link_into_repo
  log "kubernetes $version + kwok $kwok_version ready (cached build in $dest, linked into .tools/bin)"
  etcd_note
  exit 0
fi
if [[ "$mode" == "--check" ]]; then
  log "no cached build of kubernetes $version + kwok $kwok_version in $dest (run $0)"
  exit 1
fi

if ! command -v go >/dev/null 2>&1; then
  echo "k8s: Go is needed to build Kubernetes (go.mod asks for $(awk '$1=="go"{print $2}' "$here/go.mod") or newer)" >&2
  exit 1
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
log "waiting for the build lock ($cache_root/.lock)"
flock 9
# Another build may have finished while we waited.
if [[ "$mode" != "--force" ]] && cached_ok; then
  link_into_repo
  log "kubernetes $version ready (built by a concurrent run)"
  exit 0
fi

gomodcache="$(go env GOMODCACHE)"
gocache="$(go env GOCACHE)"
du_mb() { local v; v="$(du -sm "$1" 2>/dev/null | cut -f1)"; echo "${v:-0}"; }
mod_before="$(du_mb "$gomodcache")"; cache_before="$(du_mb "$gocache")"
start=$(date +%s)

export CGO_ENABLED=0
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"; [[ -n "${ticker:-}" ]] && kill "$ticker" 2>/dev/null || true' EXIT
mkdir -p "$tmp/bin" "$tmp/stages"

log "building kubernetes $version and kwok $kwok_version from Go modules ($(go version | cut -d' ' -f3), $(nproc) cores)"
log "a cold build downloads ~700 MB of modules and compiles for ~12 min on 2 cores (Go build cache +4 GB); progress every 30 s"
(
  while sleep 30 >/dev/null 2>&1; do
    log "... still building ($(( $(date +%s) - start )) s, Go build cache $(du_mb "$gocache") MB)"
  done
) &
ticker=$!

cd "$here"
export GOFLAGS="-mod=readonly -buildvcs=false"
log "step 1/6: downloading modules"
go mod download

# The version Kubernetes' own build (hack/lib/version.sh) stamps; the apiserver derives its
# emulation/compatibility version from gitVersion, so an unstamped build would misreport itself.
info_file="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"Info": *"\([^"]*\)".*/\1/p')"
release_time="$(sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "$info_file")"
minor="${version#v}"; minor="${minor#*.}"; minor="${minor%%.*}"
major="${version#v}"; major="${major%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${release_time:-1970-01-01T00:00:00Z}"
  # The proxy does not say which commit the tag is; the module's go.sum hash identifies the source.
  ldflags+=" -X $pkg.gitCommit=module-k8s.io/kubernetes@$version"
done

times_file="$tmp/build-times.txt"
step=2
for t in kube-apiserver kube-controller-manager kube-scheduler; do
  log "step $step/6: go build k8s.io/kubernetes/cmd/$t"
  t0=$(date +%s)
  go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/$t" "k8s.io/kubernetes/cmd/$t"
  echo "$t $(( $(date +%s) - t0 )) s" >>"$times_file"
  log "$t built in $(( $(date +%s) - t0 )) s"
  step=$((step + 1))
done

log "step 5/6: go install sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
t0=$(date +%s)
# `go install pkg@version` builds outside this module (kwok's own go.mod and go.sum decide).
(cd "$tmp" && GOFLAGS=-buildvcs=false GOBIN="$tmp/bin" go install -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version" "sigs.k8s.io/kwok/cmd/kwok@$kwok_version")
echo "kwok $(( $(date +%s) - t0 )) s" >>"$times_file"
log "kwok built in $(( $(date +%s) - t0 )) s"
kill "$ticker" 2>/dev/null || true; ticker=""

log "step 6/6: kwok's Stage documents"
kwok_dir="$(cd "$tmp" && go mod download -json "sigs.k8s.io/kwok@$kwok_version" | sed -n 's/.*"Dir": *"\([^"]*\)".*/\1/p')"
for d in "${stage_dirs[@]}"; do
  src="$kwok_dir/kustomize/stage/$d"
  found=0
  for f in "$src"/*.yaml; do
    [[ "$(basename "$f")" == kustomization.yaml ]] && continue
    install -m 0644 "$f" "$tmp/stages/$(basename "$f")"
    found=1
  done
  [[ "$found" == 1 ]] || { echo "k8s: no Stage documents in $src" >&2; exit 1; }
done

got="$("$tmp/bin/kube-apiserver" --version 2>/dev/null || true)"
if [[ "$got" != "Kubernetes $version" ]]; then
  echo "k8s: built kube-apiserver reports '$got', expected 'Kubernetes $version'" >&2
  exit 1
fi
# What this build cost, beside the stamp (the stamp stays the cache key): bench/local_stack.py
# reports it as part of k8s_build_s. A build on a warm Go build cache adds little to it: the
# added MB say which kind of build the seconds measure.
cat >"$tmp/build.json" <<JSON
{"seconds": $(( $(date +%s) - start )), "go_build_cache_added_mb": $(( $(du_mb "$gocache") - cache_before )), "go_modules_added_mb": $(( $(du_mb "$gomodcache") - mod_before )), "built_at": "$(date -u +%FT%TZ)", "cores": $(nproc)}
JSON
stamp_line >"$tmp/stamp"
rm -rf "$dest.old"
[[ -d "$dest" ]] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old"
trap - EXIT
link_into_repo

elapsed=$(( $(date +%s) - start ))
log "kubernetes $version + kwok $kwok_version built in ${elapsed} s into $dest ($(du -sh "$dest/bin" | cut -f1)), linked into .tools/bin"
log "per binary: $(paste -sd, "$dest/build-times.txt" | sed 's/,/, /g')"
log "disk: Go module cache +$(( $(du_mb "$gomodcache") - mod_before )) MB ($gomodcache)," \
    "Go build cache +$(( $(du_mb "$gocache") - cache_before )) MB ($gocache)"
etcd_note
