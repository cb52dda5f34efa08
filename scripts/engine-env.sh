# shellcheck shell=bash
# Source this to run the Pulumi engine the way edgefabric expects:
#
#   . scripts/engine-env.sh && pulumi preview --stack local
#
# It sets, for this shell only:
#   PULUMI_HOME        <repo>/.pulumi-home   (plugins, credentials, workspace settings: ignored by git)
#   PULUMI_BACKEND_URL file://<repo>/.state?metadata=skip  (a local file backend; no `pulumi login`)
#   PATH               <repo>/.tools/bin first (the engine built by tools/pulumi-engine/build.sh)
#                      and <repo>/venv/bin after it
#   PULUMI_SKIP_UPDATE_CHECK=true, PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
#                      (no network: never look for a newer CLI or download a plugin)
#
# It does NOT set PULUMI_CONFIG_PASSPHRASE: that is per stack. The `local` stack uses a published
# passphrase (see the Makefile and README); dev/staging/prod must bring their own secrets provider.
# Callers may override the two locations before sourcing (tests point them at a throwaway copy).

_ef_repo="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export EDGEFABRIC_REPO="$_ef_repo"
export PULUMI_HOME="${PULUMI_HOME:-$_ef_repo/.pulumi-home}"
# metadata=skip: the file backend then writes each checkpoint to a temporary file and renames it,
# and no `.attrs` sidecar beside it, which a killed `pulumi up` can leave empty ("failed to load
# checkpoint: EOF" for every later command). See README "Recovering a killed `pulumi up`".
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$_ef_repo/.state?metadata=skip}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
mkdir -p "$PULUMI_HOME"
# Only a file backend is a directory here; s3://, azblob://, gs:// are made by their owners.
case "$PULUMI_BACKEND_URL" in file://*) _ef_state="${PULUMI_BACKEND_URL#file://}"; mkdir -p "${_ef_state%%\?*}" ;; esac
case ":$PATH:" in
  *":$_ef_repo/.tools/bin:"*) ;;
  *) export PATH="$_ef_repo/.tools/bin:$PATH" ;;
esac
unset _ef_repo
