"""Full-stack test: the real SAM template, built by `sam build`, deployed into LocalStack with
`samlocal deploy --config-env local`, and called the way a workload calls it: through the REST
API's LocalStack URL -> the real token-exchange binary (run by our host executor) -> LocalStack
STS, DynamoDB and Secrets Manager (the stack's generated signing key); the lease API through API
Gateway (GET and DELETE /v1/leases/{id}: token-exchange may not edit IAM, so it hands the STS
lease to the revoker, which writes the role's credbroker-revocations deny policy in LocalStack
IAM); the db-credentials routes; the deployed roles holding no more than each function calls;
and the EventBridge schedule firing the real revoker, which ends an expired lease and the
handed-over one REVOKED.

Run it through scripts/fullstack-test.sh (which installs the tools, makes sure LocalStack runs
with LAMBDA_RUNTIME_EXECUTOR=host and uses the LocalStack venv's Python, which has boto3 and
cryptography). The last line is `fullstack: N passed, N failed`; the exit code is non-zero on any
failure.

Environment:
  FULLSTACK_ENDPOINT     LocalStack (default http://127.0.0.1:4566)
  FULLSTACK_TOOLS_BIN    directory with sam, samlocal, cargo-lambda (required)
  FULLSTACK_SKIP_BUILD=1 reuse target/sam/local/build (iterating on the test itself)
  FULLSTACK_KEEP_STACK=1 leave the stack deployed (then delete it yourself)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = os.environ.get("FULLSTACK_ENDPOINT", "http://127.0.0.1:4566").rstrip("/")
REGION = "us-east-1"
ACCOUNT = "000000000000"
ARTIFACTS_BUCKET = "credbroker-local-artifacts"  # = s3_bucket of [local.deploy.parameters]
BUILD_DIR = REPO / "target/sam/local/build"  # = build_dir of [local.build.parameters]

PASSED: list[str] = []
FAILED: list[str] = []


def log(msg: str) -> None:
    print(f"fullstack: {msg}", flush=True)


def check(name: str, cond: bool, detail: object = "") -> bool:
    if cond:
        PASSED.append(name)
        print(f"  ok    {name}", flush=True)
    else:
        FAILED.append(name)
        print(f"  FAIL  {name}: {detail}", flush=True)
    return cond


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def client(service: str, **creds):
    kw = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    kw.update(creds)
    return boto3.client(
        service, endpoint_url=ENDPOINT, region_name=REGION,
        config=BotoConfig(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=60), **kw,
    )


# ------------------------------------------------------------------------------ OIDC issuer


class OidcIssuer:
    """An ES256 OIDC issuer on 127.0.0.1: discovery document and JWKS over real HTTP."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "fullstack-1"
        numbers = self.key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big")),
        }
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path == "/jwks":
                    body = {"keys": [issuer.jwk]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url, "sub": "repo:acme/ledger:ref:refs/heads/main", "aud": "credbroker",
            "iat": now, "nbf": now, "exp": now + 300, "jti": secrets.token_hex(8), "team": "platform",
        }
        claims.update(overrides)
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------ HTTP


def http(method: str, url: str, body: dict | None = None, bearer: str | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if bearer is not None:
        req.add_header("authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def verify_eddsa(token: str, jwks: dict) -> dict:
    header_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(b64url_decode(header_b64))
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert header["alg"] == "EdDSA" and key["kty"] == "OKP" and key["crv"] == "Ed25519", (header, key)
    Ed25519PublicKey.from_public_bytes(b64url_decode(key["x"])).verify(
        b64url_decode(sig_b64), f"{header_b64}.{claims_b64}".encode()
    )
    return json.loads(b64url_decode(claims_b64))


# ------------------------------------------------------------------------------ steps


def run(cmd: list[str], log_file: Path, env: dict[str, str], what: str) -> float:
    t0 = time.monotonic()
    with log_file.open("w") as out:
        rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    if rc != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"{what} failed (exit {rc}, {took:.1f} s); last lines of {log_file}:\n" + "\n".join(tail))
    log(f"{what}: {took:.1f} s (log: {log_file})")
    return took


def local_overrides() -> list[str]:
    """The `local` environment's parameter_overrides from samconfig.toml (one source of truth)."""
    with (REPO / "samconfig.toml").open("rb") as f:
        conf = tomllib.load(f)
    overrides = conf["local"]["deploy"]["parameters"]["parameter_overrides"]
    return list(overrides) if isinstance(overrides, list) else overrides.split()


def write_config(work: Path, issuer: OidcIssuer, role_arn: str) -> None:
    (work / "policies").mkdir()
    (work / "policies" / "fullstack.toml").write_text(
        f"""# Written by tests/fullstack/fullstack_test.py for one run.
description = "full-stack test workloads"
issuer = "{issuer.url}"
audience = ["credbroker"]
subject = {{ glob = "repo:acme/*:ref:refs/heads/main" }}

[claims]
team = {{ regex = "[a-z]+" }}

[grants.api]
type = "signed_token"
audience = "ledger"
scopes = ["ledger:read"]

[grants.aws]
type = "aws_role"
role_arn = "{role_arn}"
session_tags = {{ team = "{{{{claims.team}}}}" }}
"""
    )
    # Short-lived leases for the revoker check (a policy with AWS grants needs ttl.max >= 15m,
    # hence a policy of its own).
    (work / "policies" / "fullstack-short.toml").write_text(
        f"""# Written by tests/fullstack/fullstack_test.py for one run.
description = "full-stack test: leases that expire at once"
issuer = "{issuer.url}"
audience = ["credbroker"]
subject = {{ glob = "repo:acme/*:ref:refs/heads/main" }}

[ttl]
default = "5s"
max = "1m"

[grants.api]
type = "signed_token"
audience = "ledger"
scopes = ["ledger:read"]
"""
    )
    # The OIDC issuer of this test speaks http:// on 127.0.0.1. No signing key here: the
    # functions read the stack's generated Secrets Manager secret.
    (work / "credbroker.toml").write_text("[identity]\nallow_http_loopback = true\n")


def deny_policy(iam, role_name: str) -> str | None:
    """The role's credbroker-revocations policy as text (IAM returns it URL-encoded), if any."""
    try:
        doc = iam.get_role_policy(RoleName=role_name, PolicyName="credbroker-revocations")["PolicyDocument"]
    except iam.exceptions.NoSuchEntityException:
        return None
    return urllib.parse.unquote(doc) if isinstance(doc, str) else json.dumps(doc)


def role_actions(iam, role_name: str) -> tuple[set[str], str]:
    """Every action of the role's inline policies, and their text."""
    actions: set[str] = set()
    texts = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        doc = json.loads(urllib.parse.unquote(doc)) if isinstance(doc, str) else doc
        texts.append(json.dumps(doc))
        for statement in doc["Statement"]:
            action = statement["Action"]
            actions.update([action] if isinstance(action, str) else action)
    return actions, "\n".join(texts)


def check_deployed_roles(iam, lambda_client, functions: list[str], signing_key_arn: str) -> None:
    token_exchange, db_credentials, revoker = functions
    roles = {f: lambda_client.get_function_configuration(FunctionName=f)["Role"].split("/")[-1] for f in functions}
    for label, function in (("token-exchange", token_exchange), ("db-credentials", db_credentials)):
        actions, _ = role_actions(iam, roles[function])
        check(f"deployed role of {label}: no iam:* action", not any(a.startswith("iam:") for a in actions),
              sorted(actions))
    actions, text = role_actions(iam, roles[db_credentials])
    check("deployed role of db-credentials: no access to the signing key, cannot assume roles",
          signing_key_arn not in text and not any(a.startswith("sts:") for a in actions), sorted(actions))
    actions, text = role_actions(iam, roles[revoker])
    check("deployed role of the revoker: IAM writes only (no read-back), no signing key",
          {a for a in actions if a.startswith("iam:")} == {"iam:PutRolePolicy", "iam:DeleteRolePolicy"}
          and signing_key_arn not in text, sorted(actions))


def bootstrap_pids(function_names: list[str]) -> list[int]:
    """Host processes of this stack's functions (the executor passes the function's environment)."""
    wanted = [f"AWS_LAMBDA_FUNCTION_NAME={name}".encode() for name in function_names]
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(w in env for w in wanted):
            pids.append(int(entry.name))
    return pids


def main() -> int:
    tools = os.environ.get("FULLSTACK_TOOLS_BIN")
    if not tools:
        print("fullstack: FULLSTACK_TOOLS_BIN is not set (run scripts/fullstack-test.sh)", file=sys.stderr)
        return 2
    suffix = secrets.token_hex(3)
    stack = f"credbroker-fullstack-{suffix}"
    role_name = f"credbroker-fullstack-{suffix}"
    # Workload roles live under the stack's WorkloadRolePath (the only roles it may touch).
    role_path = f"/credbroker-{suffix}/"
    role_arn = f"arn:aws:iam::{ACCOUNT}:role{role_path}{role_name}"
    work = Path(tempfile.mkdtemp(prefix="credbroker-fullstack-"))
    logs_dir = REPO / "target/sam/local/logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    env.update({
        "PATH": f"{tools}:{env.get('PATH', '')}",
        "SAM_CLI_TELEMETRY": "0",
        "DISABLE_DEPRECATION_NOTICE": "1",
        "AWS_ENDPOINT_URL": ENDPOINT,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        # Debug build, native compiler: the test runs on this x86_64 host (release builds and
        # zig's cross-compilation are for AWS).
        "SAM_BUILD_MODE": "debug",
        "CARGO_LAMBDA_COMPILER": "cargo",
        "CREDBROKER_POLICY_DIR": str(work / "policies"),
        "CREDBROKER_CONFIG_FILE": str(work / "credbroker.toml"),
    })
    issuer = OidcIssuer()
    cfn, iam, ddb, logs_client = client("cloudformation"), client("iam"), client("dynamodb"), client("logs")
    deployed = False
    handed_off = None
    function_name = f"{stack}-token-exchange"
    functions = [function_name, f"{stack}-db-credentials", f"{stack}-revoker"]
    table = None
    try:
        write_config(work, issuer, role_arn)
        log(f"OIDC issuer {issuer.url}; stack {stack}; work dir {work}")

        # -- build: sam build --config-env local (rust-cargolambda + the ConfigLayer Makefile)
        if os.environ.get("FULLSTACK_SKIP_BUILD") == "1" and (BUILD_DIR / "template.yaml").exists():
            log("FULLSTACK_SKIP_BUILD=1: reusing target/sam/local/build (policies rebuilt)")
            layer = BUILD_DIR / "ConfigLayer" / "credbroker"
            shutil.rmtree(layer / "policies")
            shutil.copytree(work / "policies", layer / "policies")
            shutil.copy(work / "credbroker.toml", layer / "credbroker.toml")
        else:
            run(["sam", "build", "--config-env", "local"], logs_dir / "sam-build.log", env, "sam build --config-env local")
        layer_files = sorted(p.name for p in (BUILD_DIR / "ConfigLayer/credbroker/policies").iterdir())
        check("sam build packaged the policies in the ConfigLayer",
              layer_files == ["fullstack-short.toml", "fullstack.toml"], layer_files)
        built = {f: os.access(BUILD_DIR / f / "bootstrap", os.X_OK)
                 for f in ("TokenExchangeFunction", "DbCredentialsFunction", "RevokerFunction")}
        check("sam build produced an executable bootstrap per function", all(built.values()), built)

        # -- the workload role the broker hands out (trusting the broker's role, as docs/deploy.md says)
        client("s3").create_bucket(Bucket=ARTIFACTS_BUCKET)

        # -- deploy: samlocal deploy --config-env local, the env's overrides plus this run's
        overrides = [o for o in local_overrides() if not o.startswith("WorkloadRolePath=")]
        overrides += [f"WorkloadRolePath={role_path}"]
        deployed = True
        run(["samlocal", "deploy", "--config-env", "local", "--stack-name", stack, "--no-confirm-changeset",
             "--no-progressbar", "--parameter-overrides", *overrides],
            logs_dir / "samlocal-deploy.log", env, "samlocal deploy --config-env local")
        desc = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        check("stack CREATE_COMPLETE", desc["StackStatus"] == "CREATE_COMPLETE", desc["StackStatus"])
        out = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
        table = out["LeaseTableName"]
        public_url = next(o.split("=", 1)[1] for o in overrides if o.startswith("PublicUrl="))
        iam.create_role(
            RoleName=role_name,
            Path=role_path,
            AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": out["TokenExchangeRoleArn"]},
                               "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}],
            }),
        )
        base = f"{ENDPOINT}/_aws/execute-api/{out['ApiId']}/{out['StageName']}"
        log(f"API {base}")

        # -- the signing key is the stack's generated secret (AWSCURRENT), in the SAM format
        secret = json.loads(client("secretsmanager").get_secret_value(SecretId=out["SigningKeySecretArn"])["SecretString"])
        check("signing key secret generated as {format: ed25519-seed-sha256, seed: 64 chars}",
              secret.get("format") == "ed25519-seed-sha256" and len(secret.get("seed", "")) == 64,
              {k: (v if k == "format" else f"<{len(v)} chars>") for k, v in secret.items()})
        # Its public key, as the functions derive it (seed = SHA-256 of the text).
        expected_x = b64url(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(secret["seed"].encode()).digest())
                            .public_key().public_bytes_raw())

        # -- a lease that expires in 5 s, for the revoker (the schedule fires every minute); taken
        #    first so that waiting for the revoker overlaps the other checks
        t0 = time.monotonic()
        status, body = http("POST", f"{base}/v1/token", {"token": issuer.token(), "grant": "fullstack-short/api"})
        short_lease = body.get("lease_id") if isinstance(body, dict) else None
        check(f"exchange for a 5 s lease = 200 ({1000 * (time.monotonic() - t0):.0f} ms; cold start)",
              status == 200 and short_lease is not None and 0 <= body.get("expires_in", -1) <= 5, (status, body))
        short_lease_at = time.monotonic()

        # -- the table is what the store expects
        t = ddb.describe_table(TableName=table)["Table"]
        gsis = {g["IndexName"]: ([(k["AttributeName"], k["KeyType"]) for k in g["KeySchema"]], g["Projection"]["ProjectionType"])
                for g in t.get("GlobalSecondaryIndexes", [])}
        check("lease table keys and GSIs as shared/src/store/dynamodb.rs documents",
              [(k["AttributeName"], k["KeyType"]) for k in t["KeySchema"]] == [("pk", "HASH")]
              and gsis == {"due": ([("due_pk", "HASH"), ("due_at", "RANGE")], "ALL"),
                           "identity": ([("holder", "HASH"), ("created_sk", "RANGE")], "ALL")}
              and t.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST", (t["KeySchema"], gsis))
        ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        check("lease table TTL on attribute ttl", ttl.get("AttributeName") == "ttl" and ttl.get("TimeToLiveStatus") == "ENABLED", ttl)

        # -- through API Gateway -> the real binary
        t0 = time.monotonic()
        status, body = http("GET", f"{base}/v1/health")
        check(f"GET /v1/health = 200 ok ({1000 * (time.monotonic() - t0):.0f} ms)",
              status == 200 and isinstance(body, dict) and body.get("status") == "ok", (status, body))
        status, disco = http("GET", f"{base}/.well-known/openid-configuration")
        check("discovery document names the PublicUrl as issuer",
              status == 200 and isinstance(disco, dict) and disco.get("issuer") == public_url, (status, disco))
        status, jwks = http("GET", f"{base}/.well-known/jwks.json")
        check("JWKS publishes the Ed25519 key of the stack's Secrets Manager secret", status == 200
              and isinstance(jwks, dict) and any(k.get("crv") == "Ed25519" and k.get("x") == expected_x
                                                 for k in jwks.get("keys", [])), (status, jwks, expected_x))

        t0 = time.monotonic()
        status, body = http("POST", f"{base}/v1/token", {"token": issuer.token(), "grant": "fullstack/api"})
        if check(f"exchange for a broker-signed token = 200 ({1000 * (time.monotonic() - t0):.0f} ms)",
                 status == 200 and isinstance(body, dict) and "access_token" in body, (status, body)):
            try:
                claims = verify_eddsa(body["access_token"], jwks)
                check("broker-signed token verifies against the deployed JWKS (iss, aud, scope)",
                      claims.get("iss") == public_url and claims.get("aud") in ("ledger", ["ledger"])
                      and claims.get("scope") == "ledger:read", claims)
            except Exception as e:  # noqa: BLE001
                check("broker-signed token verifies against the deployed JWKS", False, repr(e))

        t0 = time.monotonic()
        status, body = http("POST", f"{base}/v1/token", {"token": issuer.token(), "grant": "fullstack/aws"})
        ok = check(f"exchange for an STS session = 200 ({1000 * (time.monotonic() - t0):.0f} ms)",
                   status == 200 and isinstance(body, dict) and "credentials" in body, (status, body))
        if ok:
            lease_id = body["lease_id"]
            creds = body["credentials"]
            check("session named after the lease", body.get("assumed_role_arn", "").endswith(f"{role_name}/{lease_id}"), body)
            ident = client("sts", aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                           aws_session_token=creds["SessionToken"]).get_caller_identity()
            check("the returned credentials are a LocalStack STS session of the workload role",
                  ident["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{lease_id}", ident)
            item = ddb.get_item(TableName=table, Key={"pk": {"S": f"lease#{lease_id}"}}, ConsistentRead=True).get("Item")
            check("the lease is ACTIVE in the deployed DynamoDB table",
                  item is not None and item["status"]["S"] == "ACTIVE" and item["policy"]["S"] == "fullstack"
                  and item["grant"]["S"] == "aws", item)

            # -- the lease API through API Gateway, as the lease's holder
            status, got = http("GET", f"{base}/v1/leases/{lease_id}", bearer=issuer.token())
            check("GET /v1/leases/{id} as the holder = 200 ACTIVE",
                  status == 200 and isinstance(got, dict) and got.get("status") == "ACTIVE"
                  and got.get("lease_id") == lease_id, (status, got))
            status, got = http("GET", f"{base}/v1/leases/{lease_id}",
                               bearer=issuer.token(sub="repo:acme/other:ref:refs/heads/main"))
            check("GET /v1/leases/{id} as someone else = 404 lease_not_found",
                  (status, got.get("reason") if isinstance(got, dict) else got) == (404, "lease_not_found"), (status, got))
            t0 = time.monotonic()
            status, got = http("DELETE", f"{base}/v1/leases/{lease_id}", bearer=issuer.token())
            check(f"DELETE /v1/leases/{{id}} of an STS lease = 202 REVOKING, handed to the revoker "
                  f"({1000 * (time.monotonic() - t0):.0f} ms)",
                  status == 202 and isinstance(got, dict) and got.get("status") == "REVOKING", (status, got))
            check("token-exchange wrote no IAM policy itself", deny_policy(iam, role_name) is None,
                  deny_policy(iam, role_name))
            handed_off = (lease_id, time.monotonic())
            # Renewal is db-credentials' route; an STS session cannot be extended.
            status, got = http("POST", f"{base}/v1/leases/{lease_id}/renew", {"ttl": "10m"}, bearer=issuer.token())
            check("POST /v1/leases/{id}/renew answered by db-credentials: 409 lease_not_renewable",
                  (status, got.get("reason") if isinstance(got, dict) else got) == (409, "lease_not_renewable"),
                  (status, got))

        # -- the db-credentials route reaches the real db-credentials binary (this stack has no
        #    [databases]: a signed_token grant asked for at the database route is a 400)
        t0 = time.monotonic()
        status, got = http("POST", f"{base}/v1/db/fullstack/api/credentials", {}, bearer=issuer.token())
        check(f"POST /v1/db/{{policy}}/{{grant}}/credentials answered by db-credentials: 400 invalid_request "
              f"({1000 * (time.monotonic() - t0):.0f} ms; cold start)",
              (status, got.get("reason") if isinstance(got, dict) else got) == (400, "invalid_request"), (status, got))

        # -- refusals: the same status and reason as the local broker gives
        replayed = issuer.token()
        http("POST", f"{base}/v1/token", {"token": replayed, "grant": "fullstack/api"})
        tampered = issuer.token()
        tampered = tampered[:-4] + ("AAAA" if not tampered.endswith("AAAA") else "BBBB")
        cases = [
            ("tampered signature", tampered, 401, "invalid_signature"),
            ("wrong audience", issuer.token(aud="sts.amazonaws.com"), 403, "audience_mismatch"),
            ("claim mismatch", issuer.token(team="Platform"), 403, "claim_mismatch:team"),
            ("expired token", issuer.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000,
                                           nbf=int(time.time()) - 4000), 401, "token_expired"),
            ("replayed token", replayed, 401, "replayed_token"),
        ]
        for name, token, want_status, want_reason in cases:
            status, body = http("POST", f"{base}/v1/token", {"token": token, "grant": "fullstack/api"})
            got = (status, body.get("reason") if isinstance(body, dict) else body)
            check(f"{name}: {want_status} {want_reason}", got == (want_status, want_reason), got)

        # -- logs: the function's output (audit events) reached CloudWatch Logs via the executor
        events = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                events = logs_client.filter_log_events(logGroupName=f"/aws/lambda/{function_name}")["events"]
            except logs_client.exceptions.ResourceNotFoundException:
                events = []
            text = "\n".join(e["message"] for e in events)
            if "REPORT RequestId" in text and '"audit":true' in text:
                break
            time.sleep(0.5)
        text = "\n".join(e["message"] for e in events)
        check("START/REPORT lines and audit events in CloudWatch Logs",
              "START RequestId" in text and "REPORT RequestId" in text and '"audit":true' in text, text[-2000:])

        # -- EventBridge schedule -> the real revoker: the 5 s lease ends REVOKED. LocalStack fires
        #    a rate(1 minute) rule a minute after its creation, then every minute.
        if short_lease:
            item, deadline = None, short_lease_at + 150
            while time.monotonic() < deadline:
                item = ddb.get_item(TableName=table, Key={"pk": {"S": f"lease#{short_lease}"}},
                                    ConsistentRead=True).get("Item")
                if item and item["status"]["S"] == "REVOKED":
                    break
                time.sleep(2)
            check(f"the EventBridge schedule fired the revoker: expired lease REVOKED "
                  f"{time.monotonic() - short_lease_at:.0f} s after issue",
                  item is not None and item["status"]["S"] == "REVOKED", item)
            revoker_log = ""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    revoker_log = "\n".join(e["message"] for e in logs_client.filter_log_events(
                        logGroupName=f"/aws/lambda/{stack}-revoker")["events"])
                except logs_client.exceptions.ResourceNotFoundException:
                    revoker_log = ""
                if '"LeasesRevoked"' in revoker_log:
                    break
                time.sleep(0.5)
            check("the revoker's EMF metrics name Function = the function's name (the alarm's dimension)",
                  f'"Function":"{stack}-revoker"' in revoker_log.replace(": ", ":"), revoker_log[-1500:])
        # -- the STS lease the lease API handed over: ended by the revoker function, which alone
        #    writes the role's deny policy
        if handed_off:
            lease_id, since = handed_off
            item, deadline = None, since + 150
            while time.monotonic() < deadline:
                item = ddb.get_item(TableName=table, Key={"pk": {"S": f"lease#{lease_id}"}},
                                    ConsistentRead=True).get("Item")
                if item and item["status"]["S"] == "REVOKED":
                    break
                time.sleep(2)
            check(f"the revoker ended the handed-over STS lease: REVOKED {time.monotonic() - since:.0f} s after DELETE",
                  item is not None and item["status"]["S"] == "REVOKED", item)
            denied = deny_policy(iam, role_name) or ""
            check("the role's credbroker-revocations deny policy, written by the revoker, names the session",
                  lease_id in denied, denied[:500])
            revoker_log = ""
            try:
                revoker_log = "\n".join(e["message"] for e in logs_client.filter_log_events(
                    logGroupName=f"/aws/lambda/{stack}-revoker")["events"])
            except logs_client.exceptions.ResourceNotFoundException:
                pass
            check("the revoker's log names the lease it ended (asked by its holder)",
                  lease_id in revoker_log and "asked by holder:" in revoker_log, revoker_log[-1500:])
        # -- least privilege of the deployed roles (the static check reads the templates; this
        #    reads what CloudFormation created)
        check_deployed_roles(iam, client("lambda"), functions, out["SigningKeySecretArn"])
        # -- Secrets Manager rotation -> rotator: PLACEHOLDER until functions/rotator exists.
    except Exception as e:  # noqa: BLE001
        check("full-stack run completed", False, "".join(traceback.format_exception(e)))
    finally:
        issuer.close()
        if deployed and os.environ.get("FULLSTACK_KEEP_STACK") != "1":
            teardown(cfn, ddb, iam, stack, table, role_name, functions)
        shutil.rmtree(work, ignore_errors=True)
    print(f"fullstack: {len(PASSED)} passed, {len(FAILED)} failed", flush=True)
    return 1 if FAILED or not PASSED else 0


def teardown(cfn, ddb, iam, stack: str, table: str | None, role_name: str, functions: list[str]) -> None:
    t0 = time.monotonic()
    try:
        cfn.delete_stack(StackName=stack)
        status = "?"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
            except cfn.exceptions.ClientError:
                status = "DELETE_COMPLETE"  # gone
            if status.endswith("_COMPLETE") or status.endswith("_FAILED"):
                break
            time.sleep(0.5)
        check(f"stack deletes cleanly ({time.monotonic() - t0:.1f} s)", status == "DELETE_COMPLETE", status)
    except Exception as e:  # noqa: BLE001
        check("stack deletes cleanly", False, repr(e))
    left: list[int] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = bootstrap_pids(functions)
        if not left:
            break
        time.sleep(0.2)
    check("no bootstrap process of the stack outlives it", not left, left)
    if table:
        # Retained by design (DeletionPolicy: Retain, deletion protection): remove it explicitly,
        # as docs/deploy.md's teardown does.
        try:
            exists = any(t == table for t in ddb.list_tables()["TableNames"])
            check("lease table retained after stack deletion (DeletionPolicy: Retain)", exists, table)
            if exists:
                ddb.update_table(TableName=table, DeletionProtectionEnabled=False)
                ddb.delete_table(TableName=table)
        except Exception as e:  # noqa: BLE001
            check("retained lease table removed", False, repr(e))
    # The log groups (audit trail) are retained too.
    logs_client = client("logs")
    retained = [*(f"/aws/lambda/{f}" for f in functions), f"/credbroker/{stack}/api-access"]
    try:
        names = {g["logGroupName"] for g in logs_client.describe_log_groups(logGroupNamePrefix="/")["logGroups"]}
        check("log groups retained after stack deletion (audit trail)", all(n in names for n in retained),
              sorted(n for n in names if stack in n))
        for name in retained:
            if name in names:
                logs_client.delete_log_group(logGroupName=name)
    except Exception as e:  # noqa: BLE001
        check("retained log groups removed", False, repr(e))
    try:
        for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=role_name, PolicyName=name)
        iam.delete_role(RoleName=role_name)
    except Exception:  # noqa: BLE001 - may not exist when the run failed early
        pass


if __name__ == "__main__":
    sys.exit(main())
