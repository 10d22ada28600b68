//! README command 1, end to end: the real `credbroker serve` binary with its defaults.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use credbroker::devissuer::DevIssuer;
use credbroker_tests::process::{Running, binary};
use serde_json::{Map, Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Served {
    base: String,
    process: Running,
    state_dir: tempfile::TempDir,
    _policies: tempfile::TempDir,
}

/// Starts `credbroker serve` on a free port with the example policies (the local-dev policy
/// rewritten to that port), in a fresh state directory.
async fn serve() -> Served {
    serve_with(|_, _| Vec::new()).await
}

/// Like [`serve`]; `extra_args(base_url, temp_dir)` adds arguments (e.g. `--config`).
async fn serve_with(extra_args: impl FnOnce(&str, &std::path::Path) -> Vec<String>) -> Served {
    serve_with_policies(&[], extra_args).await
}

/// Like [`serve_with`], with more policy files (name, TOML; `http://127.0.0.1:8080` in them is
/// the served base URL, as in the examples).
async fn serve_with_policies(
    extra_policies: &[(&str, &str)],
    extra_args: impl FnOnce(&str, &std::path::Path) -> Vec<String>,
) -> Served {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let policies = tempfile::tempdir().expect("tempdir");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&examples)
        .expect("examples")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("read"))
        })
        .collect();
    files.extend(extra_policies.iter().map(|(name, text)| ((*name).to_owned(), (*text).to_owned())));
    for (name, text) in files {
        std::fs::write(policies.path().join(name), text.replace("http://127.0.0.1:8080", &base))
            .expect("write");
    }
    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(binary("credbroker"));
    command
        .arg("--state-dir")
        .arg(state_dir.path())
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--policy-dir")
        .arg(policies.path())
        .args(extra_args(&base, state_dir.path()))
        // LocalStack accepts any credentials; real ones must never be needed by these tests.
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE");
    let mut process = Running::spawn(command);
    process.wait_for_line("the listening banner", |l| l.contains("credbroker listening on")).await;
    Served { base, process, state_dir, _policies: policies }
}

fn dev_token(served: &Served, subject: &str) -> String {
    let dev = DevIssuer::load(served.state_dir.path(), &served.base).expect("dev issuer key");
    let mut team = Map::new();
    team.insert("team".into(), json!("platform"));
    dev.mint(subject, "credbroker", &team, Duration::from_mins(5), chrono::Utc::now()).expect("mint")
}

async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(url).json(body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn jwks_key(base: &str, kid: &str) -> jsonwebtoken::DecodingKey {
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{base}/.well-known/jwks.json"))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let jwk = jwks.find(kid).expect("kid published in the JWKS");
    jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key")
}

#[tokio::test]
async fn printed_curl_returns_a_broker_token_that_verifies_against_the_served_jwks() {
    let mut served = serve().await;
    let curl_line =
        served.process.wait_for_line("the curl hint", |l| l.trim_start().starts_with("curl -s")).await;
    // The command spans two lines (a backslash continuation): run it exactly as printed.
    let lines = served.process.lines();
    let start = lines.iter().position(|l| *l == curl_line).expect("curl line");
    let command = format!("{}\n{}", lines[start], lines[start + 1]);
    let output = Command::new("sh").arg("-c").arg(&command).output().expect("run curl");
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let body: Value = serde_json::from_slice(&output.stdout).expect("JSON from the printed curl");
    let token = body["access_token"].as_str().unwrap_or_else(|| panic!("no access_token in {body}"));

    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let key = jwks_key(&served.base, header.kid.as_deref().expect("kid")).await;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["local-api"]);
    validation.set_issuer(&[served.base.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).expect("token verifies").claims;
    assert_eq!(claims["sub"], "dev:alice");
    assert_eq!(claims["jti"], body["lease_id"]);

    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", served.base))
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(discovery["issuer"], served.base.as_str());

    let events = served.process.audit_events();
    let allow = events.iter().find(|e| e["decision"] == "allow").expect("an allow audit event");
    assert_eq!(allow["lease_id"], body["lease_id"]);
    assert!(
        !served.process.lines().iter().any(|l| l.contains("audit") && l.contains(token)),
        "token never logged"
    );
}

#[tokio::test]
async fn bad_tokens_get_stable_errors_and_audited_reasons() {
    let served = serve().await;
    let dev = DevIssuer::load(served.state_dir.path(), &served.base).expect("dev issuer key");
    let mut team = Map::new();
    team.insert("team".into(), json!("platform"));
    let now = chrono::Utc::now();
    let mint = |aud: &str, at: chrono::DateTime<chrono::Utc>| {
        dev.mint("dev:bob", aud, &team, Duration::from_mins(5), at).expect("mint")
    };
    let valid = mint("credbroker", now);
    let tampered = {
        // Flip one character of the signature.
        let mut t = mint("credbroker", now).into_bytes();
        let last = t.len() - 2;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        String::from_utf8(t).expect("utf8")
    };
    let url = format!("{}/v1/token", served.base);
    let exchange = |token: String| {
        let url = url.clone();
        async move { post_json(&url, &json!({ "token": token, "grant": "local-dev/api" })).await }
    };

    assert_eq!(exchange(valid.clone()).await.0, 200);
    let cases = [
        ("tampered signature", tampered, 401, "invalid_signature"),
        ("wrong audience", mint("someone-else", now), 403, "audience_mismatch"),
        ("expired", mint("credbroker", now - chrono::TimeDelta::hours(1)), 401, "token_expired"),
        ("replayed jti", valid, 401, "replayed_token"),
    ];
    for (name, token, status, reason) in cases {
        let (got_status, body) = exchange(token).await;
        assert_eq!(got_status, status, "{name}: {body}");
        assert_eq!(body["reason"], reason, "{name}");
        assert_eq!(body.as_object().expect("object").len(), 2, "{name}: only error and reason: {body}");
    }

    // Malformed requests are refused with the same shape.
    let (status, body) =
        post_json(&url, &json!({ "token": "x", "grant": "local-dev/api", "extra": 1 })).await;
    assert_eq!((status, body["reason"].as_str()), (400, Some("invalid_request")));

    // Every decision reached the audit log with its reason code.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reasons: Vec<String> = served
        .process
        .audit_events()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    for reason in [
        "granted",
        "invalid_signature",
        "audience_mismatch",
        "token_expired",
        "replayed_token",
        "invalid_request",
    ] {
        assert!(reasons.iter().any(|r| r == reason), "audit has {reason}: {reasons:?}");
    }
}

#[tokio::test]
async fn rfc8693_form_exchange() {
    let served = serve().await;
    let dev = DevIssuer::load(served.state_dir.path(), &served.base).expect("dev issuer key");
    let mut team = Map::new();
    team.insert("team".into(), json!("platform"));
    let token =
        dev.mint("dev:carol", "credbroker", &team, Duration::from_mins(5), chrono::Utc::now()).expect("mint");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/token", served.base))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", token.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", "local-dev/api"),
            ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().expect("expires_in") > 0);
}

#[tokio::test]
async fn serve_with_config_uses_localstack_for_leases_and_sts() {
    let sdk = credbroker_tests::localstack_sdk_config().await;
    let table = credbroker_tests::unique_name("credbroker-serve");
    let table_name = table.clone();
    let served = serve_with(move |base, dir| {
        let config = dir.join("local.toml");
        std::fs::write(
            &config,
            format!(
                "public_url = \"{base}\"\n\
                 [store]\ntype = \"dynamodb\"\ntable = \"{table_name}\"\ncreate_if_missing = true\n\
                 [aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
                 [identity]\nallow_http_loopback = true\n",
                credbroker_tests::aws_endpoint()
            ),
        )
        .expect("write config");
        vec!["--config".into(), config.display().to_string()]
    })
    .await;
    let (status, body) = post_json(
        &format!("{}/v1/token", served.base),
        &json!({ "token": dev_token(&served, "dev:dave"), "grant": "local-dev/aws" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lease_id = body["lease_id"].as_str().expect("lease_id");
    assert!(body["assumed_role_arn"].as_str().expect("arn").ends_with(&format!("/{lease_id}")), "{body}");
    let store = credbroker::store::dynamodb::DynamoLeaseStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        table.clone(),
    );
    let lease =
        credbroker::lease::LeaseStore::get(&store, &credbroker::lease::LeaseId::parse(lease_id).expect("id"))
            .await
            .expect("get")
            .expect("lease in DynamoDB");
    assert_eq!(lease.status, credbroker::lease::LeaseStatus::Active);
    drop(served);
    aws_sdk_dynamodb::Client::new(&sdk).delete_table().table_name(&table).send().await.expect("delete table");
}

#[tokio::test]
async fn serve_outside_a_checkout_uses_the_bundled_example_policies() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(binary("credbroker"));
    command
        .current_dir(cwd.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("CREDBROKER_STATE_DIR", state_dir.path());
    let mut process = Running::spawn(command);
    let banner =
        process.wait_for_line("the listening banner", |l| l.contains("credbroker listening on")).await;
    let installed = state_dir.path().join("policies");
    assert!(banner.contains(&installed.display().to_string()), "{banner}");
    for name in ["local-dev.toml", "github-actions.toml", "kubernetes.toml", "local-databases.toml"] {
        assert!(installed.join(name).is_file(), "{name} installed");
    }
}

/// A policy for GitHub-shaped tokens of the development issuer, pinned like the shipped GitHub
/// example: both subject forms, the owner's immutable ID.
const GITHUB_SHAPED: &str = r#"
issuer = "http://127.0.0.1:8080/dev/oidc"
audience = ["credbroker"]
subject = { regex = "repo:acme(@1234567)?/[A-Za-z0-9_.-]+(@[0-9]+)?:ref:refs/heads/main" }

[claims]
repository_owner_id = { exact = "1234567" }

[grants.api]
type = "signed_token"
audience = "local-api"
"#;

/// `credbroker dev-token --github` mints GitHub-shaped tokens in both subject forms; the pinned
/// policy takes both, and refuses the same names with another owner's ID (a recycled name).
#[tokio::test]
async fn dev_tokens_in_both_github_subject_forms_against_a_pinned_policy() {
    let served = serve_with_policies(&[("gh-local.toml", GITHUB_SHAPED)], |_, _| Vec::new()).await;
    let dev_token = |args: &[&str]| {
        let output = Command::new(binary("credbroker"))
            .arg("--state-dir")
            .arg(served.state_dir.path())
            .args(["dev-token", "--url", &served.base, "--github", "acme/app"])
            .args(args)
            .output()
            .expect("dev-token");
        assert!(output.status.success(), "dev-token {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
    };
    let exchange = |token: String| {
        let url = format!("{}/v1/token", served.base);
        async move { post_json(&url, &json!({ "token": token, "grant": "gh-local/api" })).await }
    };
    for form in ["names", "immutable"] {
        let token = dev_token(&["--subject-form", form]);
        let claims: Value = serde_json::from_slice(&base64_decode(token.split('.').nth(1).expect("payload")))
            .expect("claims");
        let sub = claims["sub"].as_str().expect("sub");
        assert_eq!(sub.contains("@1234567/app@7654321"), form == "immutable", "{form}: {sub}");
        assert_eq!(claims["repository_owner_id"], "1234567");
        let (status, body) = exchange(token).await;
        assert_eq!(status, 200, "{form} form: {body}");
    }
    let recycled = dev_token(&["--subject-form", "names", "--github-owner-id", "999"]);
    let (status, body) = exchange(recycled).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("claim_mismatch:repository_owner_id")),
        "{body}"
    );
}

fn base64_decode(part: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url")
}

/// `credbroker policy validate` loads a directory as the broker would and prints its
/// warnings; a broken policy fails with its file and line.
#[test]
fn policy_validate_reports_warnings_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("names-only.toml"),
        "issuer = \"https://token.actions.githubusercontent.com\"\naudience = [\"credbroker\"]\n\
         subject = { glob = \"repo:acme/*:ref:refs/heads/main\" }\n[grants.api]\ntype = \"signed_token\"\naudience = \"api\"\n",
    )
    .expect("write");
    let validate = |path: &std::path::Path| {
        Command::new(binary("credbroker")).args(["policy", "validate"]).arg(path).output().expect("validate")
    };
    let output = validate(dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: policy names-only") && stderr.contains("repository_owner_id"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 policies load, 1 warnings"));

    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let output = validate(&examples);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("warning"), "the examples are pinned");

    std::fs::write(
        dir.path().join("broken.toml"),
        "issuer = \"https://x\"\naudience = [\"a\"]\nsubjekt = 1\n",
    )
    .expect("write");
    let output = validate(dir.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.toml") && stderr.contains("line 3"), "{stderr}");
}
