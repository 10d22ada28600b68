"""Least privilege of the broker itself, read from the deployment code: each function's role in
the SAM template and in the Terraform module holds exactly the actions its code calls (the
table in docs/architecture.md, "Least privilege"), and each function serves exactly its routes.

Run by scripts/static-checks.sh with the checkov venv's Python (it has PyYAML and python-hcl2);
prints one line per check and `least-privilege: N passed, N failed`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hcl2
import yaml

REPO = Path(__file__).resolve().parents[2]

LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
LEASES = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}
ENI = {
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
}

# function -> every action its role may ever hold (all optional parts included).
EXPECTED_ACTIONS = {
    "token-exchange": LOGS | XRAY | LEASES | {
        "sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity",
        "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt",
    },
    "db-credentials": LOGS | XRAY | LEASES | ENI | {"secretsmanager:GetSecretValue", "kms:Decrypt"},
    "revoker": LOGS | XRAY | LEASES | ENI | {
        "dynamodb:DeleteItem", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "secretsmanager:GetSecretValue",
    },
}

# function -> the routes its router serves and the API sends it (the revoker has none).
EXPECTED_ROUTES = {
    "token-exchange": {
        "POST /v1/token", "GET /v1/health", "GET /.well-known/jwks.json",
        "GET /.well-known/openid-configuration", "GET /v1/leases/{id}", "DELETE /v1/leases/{id}",
        "POST /v1/leases/revoke", "POST /v1/admin/aws-role-cutoff",
    },
    "db-credentials": {"POST /v1/db/{policy}/{grant}/credentials", "POST /v1/leases/{id}/renew"},
}

SAM_ROLES = {"token-exchange": "TokenExchangeRole", "db-credentials": "DbCredentialsRole", "revoker": "RevokerRole"}
SAM_FUNCTIONS = {
    "token-exchange": "TokenExchangeFunction", "db-credentials": "DbCredentialsFunction", "revoker": "RevokerFunction",
}
TF_POLICIES = {"token-exchange": "token_exchange", "db-credentials": "db_credentials", "revoker": "revoker"}

PASSED: list[str] = []
FAILED: list[str] = []


def check(name: str, ok: bool, detail: object = "") -> None:
    (PASSED if ok else FAILED).append(name)
    print(f"  {'ok  ' if ok else 'FAIL'}  {name}" + ("" if ok else f": {detail}"), flush=True)


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (`!Ref x` -> {"Ref": x}, `!If [...]`, ...)."""


def _cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def branches(value: object) -> list:
    """Every value an `!If` may take (both branches: the check covers all parameter choices)."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, then, otherwise = value["Fn::If"]
        return branches(then) + branches(otherwise)
    if isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def sam_statements(role: dict) -> list[dict]:
    statements = []
    for policy in role["Properties"].get("Policies", []):
        for policy in branches(policy):
            for statement in policy["PolicyDocument"]["Statement"]:
                statements.extend(branches(statement))
    return statements


def actions_of(statements: list[dict]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        actions = statement.get("Action", statement.get("actions", []))
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def check_sam() -> None:
    template = yaml.load((REPO / "infra/sam/template.yaml").read_text(), Loader=CfnLoader)
    resources = template["Resources"]
    for function, role_name in SAM_ROLES.items():
        statements = sam_statements(resources[role_name])
        actions = actions_of(statements)
        check(f"SAM {role_name}: exactly the actions {function} calls", actions == EXPECTED_ACTIONS[function],
              {"extra": sorted(actions - EXPECTED_ACTIONS[function]), "missing": sorted(EXPECTED_ACTIONS[function] - actions)})
        text = repr(statements)
        if function != "revoker":
            check(f"SAM {role_name}: no iam:* action", not any(a.startswith("iam:") for a in actions), sorted(actions))
        if function != "token-exchange":
            check(f"SAM {role_name}: no access to the signing key", "SigningKeySecret" not in text, text)
            check(f"SAM {role_name}: cannot assume roles", not any(a.startswith("sts:") for a in actions), sorted(actions))
        if function == "token-exchange":
            check(f"SAM {role_name}: no database admin secret", "DatabaseAdminSecretArns" not in text, text)
        check(f"SAM {role_name}: lease table indexes named, no wildcard", "index/*" not in text, text)
    for function, name in SAM_FUNCTIONS.items():
        props = resources[name]["Properties"]
        env = props.get("Environment", {}).get("Variables", {})
        if function != "token-exchange":
            check(f"SAM {name}: no signing key in its environment", "CREDBROKER_SIGNING_KEY_SECRET_ARN" not in env, env)
        routes = {f"{e['Properties']['Method'].upper()} {e['Properties']['Path']}"
                  for e in props.get("Events", {}).values() if e["Type"] == "Api"}
        check(f"SAM {name}: serves exactly its routes", routes == EXPECTED_ROUTES.get(function, set()),
              {"extra": sorted(routes - EXPECTED_ROUTES.get(function, set())),
               "missing": sorted(EXPECTED_ROUTES.get(function, set()) - routes)})


def flatten(value: object, local_values: dict) -> list:
    """A python-hcl2 value as a flat list of strings: nested lists flattened, `${local.x}`
    replaced by the local's value (this parser wraps most values in lists)."""
    if isinstance(value, list):
        return [item for v in value for item in flatten(v, local_values)]
    if isinstance(value, str) and value.startswith("${local.") and value.endswith("}"):
        return flatten(local_values[value[len("${local."):-1]], local_values)
    return [value]


def tf_statements(document: dict) -> list[dict]:
    """Every statement of an aws_iam_policy_document, the `dynamic` ones' content included."""
    statements = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        if "statement" in dynamic:
            statements.extend(dynamic["statement"]["content"])
    return statements


def check_terraform() -> None:
    main = hcl2.loads((REPO / "infra/terraform/modules/credbroker/main.tf").read_text())
    local_values = {k: v for block in main.get("locals", []) for k, v in block.items()}
    documents = {}
    for data in main.get("data", []):
        for name, body in data.get("aws_iam_policy_document", {}).items():
            documents[name.strip('"')] = body
    for function, name in TF_POLICIES.items():
        statements = tf_statements(documents[name])
        actions = {a for st in statements for a in flatten(st.get("actions", []), local_values)}
        check(f"Terraform {name} policy: exactly the actions {function} calls", actions == EXPECTED_ACTIONS[function],
              {"extra": sorted(actions - EXPECTED_ACTIONS[function]), "missing": sorted(EXPECTED_ACTIONS[function] - actions)})
        text = repr(statements)
        if function != "revoker":
            check(f"Terraform {name} policy: no iam:* action", not any(a.startswith("iam:") for a in actions), sorted(actions))
        if function != "token-exchange":
            check(f"Terraform {name} policy: no access to the signing key", "signing_key" not in text, text)
            check(f"Terraform {name} policy: cannot assume roles", not any(a.startswith("sts:") for a in actions),
                  sorted(actions))
        check(f"Terraform {name} policy: lease table indexes named, no wildcard", "index/*" not in text, text)
    for function, key in (("token-exchange", "token_exchange_routes"), ("db-credentials", "db_credentials_routes")):
        routes = set(flatten(local_values[key], local_values))
        check(f"Terraform {key}: exactly the routes of {function}", routes == EXPECTED_ROUTES[function],
              {"extra": sorted(routes - EXPECTED_ROUTES[function]), "missing": sorted(EXPECTED_ROUTES[function] - routes)})
    shared_env = flatten(local_values["http_environment"], local_values)[0]
    check("Terraform db-credentials environment: no signing key", "CREDBROKER_SIGNING_KEY_SECRET_ARN" not in shared_env,
          shared_env)


def main() -> int:
    for run in (check_sam, check_terraform):
        try:
            run()
        except Exception as e:  # noqa: BLE001 - a template that cannot be read is a failure
            check(f"{run.__name__} completed", False, repr(e))
    print(f"least-privilege: {len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
