#!/usr/bin/env bash
# Build (or reuse) the Pulumi Kubernetes resource provider plugin and install it for our engine.
#
#   tools/pulumi-kubernetes/build.sh            # use the cached build, else build; then install
#   tools/pulumi-kubernetes/build.sh --force    # rebuild even if a cached build exists
#   tools/pulumi-kubernetes/build.sh --check    # exit 0 if built and installed, 1 if not (no build)
#
# What it builds: pulumi-resource-kubernetes from github.com/pulumi/pulumi-kubernetes/provider/v4
# (the only version the Go proxy serves, a commit of the v4.25.0 release; see README.md), stamped
# 4.25.0, into ${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}/pulumi-kubernetes/v4.25.0/bin.
#
# Where it installs it: the plugin cache of $PULUMI_HOME (default <repo>/.pulumi-home, the home
# scripts/engine-env.sh uses), as
#   $PULUMI_HOME/plugins/resource-kubernetes-v4.25.0/pulumi-resource-kubernetes  (a symlink into the build cache)
# which is where the engine looks for `kubernetes` 4.25.0 when automatic plugin acquisition is off.
# Run it with another PULUMI_HOME to install into that home too (cached: well under a second).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode="${1:-}"
case "$mode" in ""|--force|--check) ;; *) echo "usage: $0 [--force|--check]" >&2; exit 2;; esac

# The release is the sdk/v4 version go.mod pins in place of the provider's `../sdk`: one source of truth.
version="$(awk '$1 == "replace" && $2 == "github.com/pulumi/pulumi-kubernetes/sdk/v4" {print $NF}' "$here/go.mod")"
provider_version="$(awk '$1 == "github.com/pulumi/pulumi-kubernetes/provider/v4" {print $2}' "$here/go.mod")"
if [[ -z "$version" || -z "$provider_version" ]]; then
  echo "pulumi-kubernetes: cannot read the sdk/v4 replace or the provider/v4 version from $here/go.mod" >&2
  exit 1
fi

cache_root="${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}/pulumi-kubernetes"
dest="$cache_root/$version"
plugin=pulumi-resource-kubernetes
pulumi_home="${PULUMI_HOME:-$repo/.pulumi-home}"
plugin_dir="$pulumi_home/plugins/resource-kubernetes-$version"

log() { printf '[pulumi-kubernetes %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Hash of everything that goes into the build: a change to the pins or this script rebuilds.
src_hash() {
  (cd "$here" && cat go.mod go.sum deps.go build.sh) | sha256sum | cut -c1-16
}

cached_ok() {
  local stamp="$dest/stamp"
  [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$version $(src_hash)" ]] && [[ -x "$dest/bin/$plugin" ]]
}

installed_ok() {
  [[ -d "$plugin_dir" && ! -L "$plugin_dir" ]] && [[ ! -e "$plugin_dir.partial" ]] \
    && [[ "$(readlink "$plugin_dir/$plugin" 2>/dev/null)" == "$dest/bin/$plugin" ]]
}

# The engine's plugin cache layout (sdk/go/common/workspace/plugins.go): a real directory (a symlinked
# directory is skipped) named <kind>-<name>-v<version>, holding pulumi-<kind>-<name>, and no
# <dir>.partial beside it (that marks an unfinished install). The <dir>.lock file is only taken by
# `pulumi plugin install`, the <dir>.lastused file is written by the engine itself.
# Safe to run concurrently for the same home: the symlink is replaced by an atomic rename.
install_plugin() {
  mkdir -p "$pulumi_home/plugins"
  touch "$plugin_dir.partial"
  if [[ -L "$plugin_dir" || ( -e "$plugin_dir" && ! -d "$plugin_dir" ) ]]; then rm -rf "$plugin_dir"; fi
  mkdir -p "$plugin_dir"
  ln -sfn "$dest/bin/$plugin" "$plugin_dir/.$plugin.$$"
  mv -Tf "$plugin_dir/.$plugin.$$" "$plugin_dir/$plugin"
  rm -f "$plugin_dir.partial"
}

if [[ "$mode" != "--force" ]] && cached_ok; then
  if [[ "$mode" == "--check" ]]; then
    if installed_ok; then
      log "kubernetes $version ready: $plugin_dir/$plugin"
      exit 0
    fi
    log "kubernetes $version is built ($dest/bin) but not installed in $pulumi_home (run without --check)"
    exit 1
  fi
  installed_ok || install_plugin
  log "kubernetes $version ready (cached build in $dest/bin, installed in $plugin_dir)"
  exit 0
fi
if [[ "$mode" == "--check" ]]; then
  log "no build of kubernetes $version in $dest"
  exit 1
fi

if ! command -v go >/dev/null 2>&1; then
  echo "pulumi-kubernetes: Go is needed to build the provider (go.mod asks for $(awk '$1=="go"{print $2}' "$here/go.mod") or newer)" >&2
  exit 1
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
log "waiting for the build lock ($cache_root/.lock)"
flock 9
# Another build may have finished while we waited.
if [[ "$mode" != "--force" ]] && cached_ok; then
  installed_ok || install_plugin
  log "kubernetes $version ready (built by a concurrent run, installed in $plugin_dir)"
  exit 0
fi

gomodcache="$(go env GOMODCACHE)"
gocache="$(go env GOCACHE)"
du_mb() { local v; v="$(du -sm "$1" 2>/dev/null | cut -f1)"; echo "${v:-0}"; }
mod_before="$(du_mb "$gomodcache")"; cache_before="$(du_mb "$gocache")"
start=$(date +%s)

export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
# pulumi-kubernetes' own Makefile stamps the release the same way (VERSION_PATH=provider/pkg/version.Version).
version_var="github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version"
ldflags="-s -w -X $version_var=${version#v}"
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"; [[ -n "${ticker:-}" ]] && kill "$ticker" 2>/dev/null || true' EXIT

log "building $plugin ${version#v} (provider/v4 $provider_version) from Go modules ($(go version | cut -d' ' -f3), $(nproc) cores)"
log "a cold build downloads ~275 MB of modules (~1 GB unpacked) and compiles for 10-25 minutes on 2 cores; progress every 30 s"
(
  while sleep 30 >/dev/null 2>&1; do
    log "... still building ($(( $(date +%s) - start )) s, Go build cache $(du_mb "$gocache") MB)"
  done
) &
ticker=$!

cd "$here"
log "step 1/4: downloading modules"
go mod download

# The provider's main package embeds schema-embed.json and terraform-mapping-embed.json, which its
# generate.go (`//go:generate go run ./generate.go`, VERSION from the environment) derives from the
# schema.json and terraform-mapping.json beside it. The module cache is read-only, so the package is
# copied into a build copy of this module (go.mod/go.sum resolve its imports) and generated there.
log "step 2/4: go generate in a writable copy of cmd/$plugin"
provider_dir="$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi-kubernetes/provider/v4)"
# `-X` silently does nothing for a missing variable, and -trimpath keeps -ldflags out of the build
# info (`go version -m` cannot show it): check that the stamped variable exists before building.
if ! grep -q '^var Version string' "$provider_dir/pkg/version/version.go"; then
  echo "pulumi-kubernetes: $version_var not found in $provider_dir/pkg/version; the version stamp would be lost" >&2
  exit 1
fi
src="$tmp/src"
mkdir -p "$src/cmd"
cp go.mod go.sum "$src/"
cp -R "$provider_dir/cmd/$plugin" "$src/cmd/$plugin"
chmod -R u+w "$src"
(cd "$src/cmd/$plugin" && VERSION="${version#v}" go run ./generate.go)
for f in schema-embed.json terraform-mapping-embed.json; do
  [[ -s "$src/cmd/$plugin/$f" ]] || { echo "pulumi-kubernetes: generate.go did not write $f" >&2; exit 1; }
done
if ! grep -qF "\"version\":\"${version#v}\"" "$src/cmd/$plugin/schema-embed.json"; then
  echo "pulumi-kubernetes: schema-embed.json does not carry version ${version#v}" >&2
  exit 1
fi

log "step 3/4: go build ./cmd/$plugin"
(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/$plugin" "./cmd/$plugin")
kill "$ticker" 2>/dev/null || true; ticker=""

chmod -R u+w "$src"; rm -rf "$src"
# What this build cost, beside the stamp (the stamp stays the cache key): bench/local_stack.py
# reports it as part of k8s_build_s. A build on a warm Go build cache adds little to it: the
# added MB say which kind of build the seconds measure.
cat >"$tmp/build.json" <<JSON
{"seconds": $(( $(date +%s) - start )), "go_build_cache_added_mb": $(( $(du_mb "$gocache") - cache_before )), "go_modules_added_mb": $(( $(du_mb "$gomodcache") - mod_before )), "built_at": "$(date -u +%FT%TZ)", "cores": $(nproc)}
JSON
echo "$version $(src_hash)" >"$tmp/stamp"
rm -rf "$dest.old"
[[ -d "$dest" ]] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old"
trap - EXIT

log "step 4/4: installing into $plugin_dir"
install_plugin

elapsed=$(( $(date +%s) - start ))
log "kubernetes $version built in ${elapsed} s into $dest/bin ($(du -sh "$dest/bin/$plugin" | cut -f1)), installed in $plugin_dir"
log "disk: Go module cache +$(( $(du_mb "$gomodcache") - mod_before )) MB ($gomodcache)," \
    "Go build cache +$(( $(du_mb "$gocache") - cache_before )) MB ($gocache)"
