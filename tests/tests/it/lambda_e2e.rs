//! The real token-exchange `bootstrap` under a Lambda runtime-API emulator, fed API Gateway
//! REST events, with its lease store in LocalStack DynamoDB and STS in LocalStack.

use credbroker::lease::{LeaseId, LeaseStatus, LeaseStore};
use credbroker::store::dynamodb::{DynamoLeaseStore, create_table};
use credbroker_tests::lambda::{RuntimeApi, proxy_response, rest_api_event};
use credbroker_tests::oidc::OidcServer;
use credbroker_tests::{aws_endpoint, localstack_sdk_config, unique_name};
use serde_json::{Value, json};

const API_GATEWAY_SOURCE_IP: &str = "198.51.100.7";

fn policies(issuer: &str) -> [(&'static str, String); 2] {
    let common = format!(
        r#"
issuer = "{issuer}"
audience = ["credbroker"]
subject = {{ glob = "system:serviceaccount:ci:*" }}

[claims]
team = {{ regex = "[a-z]+" }}
"#
    );
    [
        (
            "edge.toml",
            format!(
                r#"{common}
[conditions]
source_cidrs = ["198.51.100.0/24"]

[grants.api]
type = "signed_token"
audience = "ledger"
scopes = ["ledger:read"]

[grants.aws]
type = "aws_role"
role_arn = "arn:aws:iam::000000000000:role/credbroker-e2e"
session_tags = {{ team = "{{{{claims.team}}}}" }}
"#
            ),
        ),
        (
            "private.toml",
            format!(
                r#"{common}
[conditions]
source_cidrs = ["10.0.0.0/8"]

[grants.api]
type = "signed_token"
audience = "ledger"
"#
            ),
        ),
    ]
}

struct Function {
    api: RuntimeApi,
    process: credbroker_tests::process::Running,
}

impl Function {
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let body = body.map(Value::to_string);
        let event = rest_api_event(method, path, headers, body.as_deref(), API_GATEWAY_SOURCE_IP);
        proxy_response(self.api.invoke(event).await)
    }

    async fn exchange(&self, token: &str, grant: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.call("POST", "/v1/token", &all, Some(&json!({ "token": token, "grant": grant }))).await
    }
}

#[tokio::test]
async fn token_exchange_lambda_end_to_end() {
    let sdk = localstack_sdk_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let table = unique_name("credbroker-lambda");
    create_table(&dynamo, &table).await.expect("create table");
    let oidc = OidcServer::start().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir(&policy_dir).expect("mkdir");
    for (name, text) in policies(&oidc.url()) {
        std::fs::write(policy_dir.join(name), text).expect("write policy");
    }
    // In Lambda the key must exist: the function loads it and never generates one.
    let key_file = dir.path().join("signing.pk8");
    credbroker::keys::SigningKey::load_or_generate(&key_file).expect("signing key");
    let config = dir.path().join("credbroker.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"https://broker.example.test\"\n\
             [identity]\nallow_http_loopback = true\n\
             [signing]\nkey_file = \"{}\"\n",
            key_file.display()
        ),
    )
    .expect("write config");

    let api = RuntimeApi::start().await;
    let process = api.spawn_function(
        "token-exchange",
        &[
            ("CREDBROKER_CONFIG", config.display().to_string()),
            ("CREDBROKER_TABLE", table.clone()),
            ("CREDBROKER_POLICY_DIR", policy_dir.display().to_string()),
            ("CREDBROKER_AWS_ENDPOINT_URL", aws_endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ],
    );
    let function = Function { api, process };

    let (status, body) = function.call("GET", "/v1/health", &[], None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let now = chrono::Utc::now();
    let token = |team: &str, aud: &str| {
        let mut claims = oidc.issuer.claims("system:serviceaccount:ci:runner", now);
        claims["team"] = json!(team);
        claims["aud"] = json!(aud);
        oidc.issuer.sign(&claims)
    };

    // Broker-signed token, verified against the JWKS the function serves.
    let (status, body) = function.exchange(&token("platform", "credbroker"), "edge/api", &[]).await;
    assert_eq!(status, 200, "{body}");
    let access_token = body["access_token"].as_str().expect("access_token");
    let (status, jwks) = function.call("GET", "/.well-known/jwks.json", &[], None).await;
    assert_eq!(status, 200);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).expect("jwks");
    let kid = jsonwebtoken::decode_header(access_token).expect("header").kid.expect("kid");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).expect("kid in jwks")).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["ledger"]);
    validation.set_issuer(&["https://broker.example.test"]);
    let claims = jsonwebtoken::decode::<Value>(access_token, &key, &validation).expect("verifies").claims;
    assert_eq!(claims["scope"], "ledger:read");

    // STS session in LocalStack; the lease is ACTIVE in DynamoDB.
    let (status, body) = function.exchange(&token("platform", "credbroker"), "edge/aws", &[]).await;
    assert_eq!(status, 200, "{body}");
    let lease_id = body["lease_id"].as_str().expect("lease_id");
    assert!(body["assumed_role_arn"].as_str().expect("arn").ends_with(&format!("/{lease_id}")));
    assert_eq!(body["credentials"]["Version"], 1);
    let store = DynamoLeaseStore::new(dynamo.clone(), table.clone());
    let lease = store.get(&LeaseId::parse(lease_id).expect("id")).await.expect("get").expect("stored");
    assert_eq!(lease.status, LeaseStatus::Active);

    // The source address is API Gateway's, never a client header.
    let spoof = [("x-forwarded-for", "10.1.2.3")];
    let (status, body) = function.exchange(&token("platform", "credbroker"), "private/api", &spoof).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("source_ip_denied")));

    // Refusals: same status and reason as locally.
    let mut tampered = token("platform", "credbroker");
    tampered.push('A');
    let cases = [
        ("tampered signature", tampered, 401, "invalid_signature"),
        ("wrong audience", token("platform", "sts.amazonaws.com"), 403, "audience_mismatch"),
        ("claim mismatch", token("Platform", "credbroker"), 403, "claim_mismatch:team"),
    ];
    for (name, token, status, reason) in cases {
        let (got, body) = function.exchange(&token, "edge/api", &[]).await;
        assert_eq!((got, body["reason"].as_str()), (status, Some(reason)), "{name}: {body}");
    }

    // Audit events reached the function's log with API Gateway's request id and source address.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let events = function.process.audit_events();
    assert!(events.len() >= 6, "one audit event per decision: {events:?}");
    assert!(events.iter().all(|e| e["source_ip"] == API_GATEWAY_SOURCE_IP), "{events:?}");
    assert!(events.iter().all(|e| e["request_id"] == "apigw-request-1"), "{events:?}");
    let logs = function.process.lines().join("\n");
    assert!(!logs.contains(access_token), "tokens are never logged");

    dynamo.delete_table().table_name(&table).send().await.expect("delete table");
}
