use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::broker::fixture::{Harness, harness};
use crate::broker::leases::{ADMIN_GRANT_HEADER, LeaseService};

const FRONT_DOOR_IP: &str = "198.51.100.7";

/// Every route set over the harness, as `credbroker serve` assembles them: the lease API holds
/// the revoker of every backend, so it ends leases itself.
fn app(h: &Harness, trust_forwarded_for: bool) -> Router {
    app_with(h, trust_forwarded_for, LeaseService::new(h.broker.clone(), h.revoker(), None))
}

fn app_with(h: &Harness, trust_forwarded_for: bool, leases: LeaseService) -> Router {
    let token = TokenState {
        broker: h.broker.clone(),
        keys: Arc::clone(&h.keys),
        public_url: "https://broker.test".into(),
    };
    let routes = exchange_routes(token)
        .merge(lease_routes(leases.clone()))
        .merge(database_routes(h.broker.clone()))
        .merge(renew_routes(leases));
    finish(routes, HttpSettings { trust_forwarded_for })
}

async fn send(app: &Router, mut request: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    request.extensions_mut().insert(ClientAddr(FRONT_DOOR_IP.parse().unwrap()));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post(content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/token").header("content-type", content_type).body(body.into()).unwrap()
}

fn json_post(body: &Value) -> Request<Body> {
    post("application/json", body.to_string())
}

fn form_post(fields: &[(&str, &str)]) -> Request<Body> {
    post("application/x-www-form-urlencoded", serde_urlencoded::to_string(fields).unwrap())
}

#[tokio::test]
async fn json_exchange_returns_the_credential_uncached() {
    let h = harness();
    let app = app(&h, false);
    let (status, headers, body) =
        send(&app, json_post(&json!({ "token": h.token(|_| {}), "grant": "ci/api", "ttl": "10m" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().unwrap().starts_with("ey"));
    let event = h.last_audit();
    assert_eq!(event.source_ip, Some(FRONT_DOOR_IP.parse().unwrap()));
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one row per malformed request
async fn malformed_requests_get_stable_errors_and_one_audit_event_each() {
    let h = harness();
    let app = app(&h, false);
    let token = h.token(|_| {});
    let form = |grant_type: &str, token_type: &str, extra: &[(&'static str, &'static str)]| {
        let mut fields = vec![
            ("grant_type", grant_type.to_owned()),
            ("subject_token", token.clone()),
            ("subject_token_type", token_type.to_owned()),
        ];
        fields.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        post("application/x-www-form-urlencoded", serde_urlencoded::to_string(&fields).unwrap())
    };
    let exchange = "urn:ietf:params:oauth:grant-type:token-exchange";
    let jwt = "urn:ietf:params:oauth:token-type:jwt";
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        ("no content type", post("text/plain", "{}"), StatusCode::BAD_REQUEST, "invalid_request"),
        ("broken JSON", post("application/json", "{\"token\":"), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "unknown JSON field",
            json_post(&json!({"token": "t", "grant": "ci/api", "scope": "admin"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "grant without policy",
            json_post(&json!({"token": "t", "grant": "api"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "path traversal grant",
            json_post(&json!({"token": "t", "grant": "../ci/api"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "ttl not a duration",
            json_post(&json!({"token": "t", "grant": "ci/api", "ttl": "forever"})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "ttl zero",
            json_post(&json!({"token": "t", "grant": "ci/api", "ttl": 0})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "ttl negative",
            json_post(&json!({"token": "t", "grant": "ci/api", "ttl": -5})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "body over 64 KiB",
            post("application/json", "x".repeat(70 * 1024)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown grant",
            json_post(&json!({"token": token, "grant": "ci/nope"})),
            StatusCode::BAD_REQUEST,
            "unknown_grant",
        ),
        (
            "form: other grant type",
            form("client_credentials", jwt, &[("audience", "ci/api")]),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "form: opaque subject token",
            form(exchange, "urn:ietf:params:oauth:token-type:access_token", &[("audience", "ci/api")]),
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
        ),
        ("form: no audience", form(exchange, jwt, &[]), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "form: scope",
            form(exchange, jwt, &[("audience", "ci/api"), ("scope", "admin")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "form: unknown field",
            form(exchange, jwt, &[("audience", "ci/api"), ("actor_token", "x")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "form: AWS grant as access token",
            form(
                exchange,
                jwt,
                &[
                    ("audience", "ci/deploy"),
                    ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                ],
            ),
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
        ),
    ];
    for (name, request, status, reason) in cases {
        let before = h.audit.events().len();
        let (got, headers, body) = send(&app, request).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["reason"], reason, "{name}: {body}");
        assert!(body["error"].is_string(), "{name}: {body}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{name}: nothing but error and reason");
        assert_eq!(headers["cache-control"], "no-store", "{name}");
        let events = h.audit.events();
        assert_eq!(events.len(), before + 1, "{name}: one audit event");
        assert_eq!(events.last().unwrap().reason, reason, "{name}");
    }
    assert!(h.store.is_empty(), "no malformed request wrote a lease");
}

#[tokio::test]
async fn rfc8693_form_with_matching_token_type() {
    let h = harness();
    let app = app(&h, false);
    let (status, _, body) = send(
        &app,
        form_post(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", &h.token(|_| {})),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
            ("resource", "ci/api"),
            ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_trusted() {
    for (trust, expected) in [(false, FRONT_DOOR_IP), (true, "10.9.8.7")] {
        let h = harness();
        let app = app(&h, trust);
        let mut request = json_post(&json!({ "token": h.token(|_| {}), "grant": "ci/api" }));
        request.headers_mut().insert("x-forwarded-for", "203.0.113.1, 10.9.8.7".parse().unwrap());
        let (status, _, _) = send(&app, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h.last_audit().source_ip, Some(expected.parse().unwrap()), "trust = {trust}");
    }
}

#[tokio::test]
async fn discovery_jwks_health_and_unknown_routes() {
    let h = harness();
    let app = app(&h, false);
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let (status, _, jwks) = send(&app, get("/.well-known/jwks.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks, h.keys.jwks());
    let (_, _, discovery) = send(&app, get("/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], "https://broker.test");
    assert_eq!(discovery["jwks_uri"], "https://broker.test/.well-known/jwks.json");
    let (status, _, body) = send(&app, get("/v1/health")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, _, body) = send(&app, get("/dev/oidc/jwks.json")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "no dev issuer outside local mode"
    );
    let (status, _, _) = send(&app, Request::get("/v1/token").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

fn with_bearer(mut request: Request<Body>, token: &str) -> Request<Body> {
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn lease_request(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let builder = Request::builder().method(method).uri(path).header("content-type", "application/json");
    let request = builder.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
    match token {
        Some(token) => with_bearer(request, token),
        None => request,
    }
}

#[tokio::test]
async fn holder_reads_and_revokes_its_own_lease_and_no_one_elses() {
    let h = harness();
    let app = app(&h, false);
    let (_, _, body) = send(&app, json_post(&json!({ "token": h.token(|_| {}), "grant": "ci/api" }))).await;
    let id = body["lease_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/leases/{id}");
    let holder = h.token(|_| {});
    let stranger = h.token(|c| c["sub"] = json!("repo:acme/other"));

    let (status, _, lease) = send(&app, lease_request("GET", &path, Some(&holder), None)).await;
    assert_eq!((status, lease["status"].as_str()), (StatusCode::OK, Some("ACTIVE")), "{lease}");
    assert!(lease.to_string().find("access_token").is_none(), "no secret material in a lease view");

    let cases = [
        ("no token", lease_request("GET", &path, None, None), StatusCode::UNAUTHORIZED, "missing_token"),
        (
            "someone else's lease",
            lease_request("GET", &path, Some(&stranger), None),
            StatusCode::NOT_FOUND,
            "lease_not_found",
        ),
        (
            "not a lease id",
            lease_request("GET", "/v1/leases/nope", Some(&holder), None),
            StatusCode::NOT_FOUND,
            "lease_not_found",
        ),
        (
            "stranger revokes",
            lease_request("DELETE", &path, Some(&stranger), None),
            StatusCode::NOT_FOUND,
            "lease_not_found",
        ),
        (
            "holder forces",
            lease_request("DELETE", &format!("{path}?force=true"), Some(&holder), None),
            StatusCode::FORBIDDEN,
            "not_admin",
        ),
        (
            "signed tokens cannot be extended",
            lease_request("POST", &format!("{path}/renew"), Some(&holder), Some(json!({"ttl": "5m"}))),
            StatusCode::CONFLICT,
            "lease_not_renewable",
        ),
        (
            "renew with junk",
            lease_request(
                "POST",
                &format!("{path}/renew"),
                Some(&holder),
                Some(json!({"ttl": "5m", "x": 1})),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (name, request, status, reason) in cases {
        let (got, _, body) = send(&app, request).await;
        assert_eq!((got, body["reason"].as_str()), (status, Some(reason)), "{name}: {body}");
    }

    let (status, _, revoked) = send(&app, lease_request("DELETE", &path, Some(&holder), None)).await;
    assert_eq!((status, revoked["status"].as_str()), (StatusCode::OK, Some("REVOKED")), "{revoked}");
    let (status, _, again) = send(&app, lease_request("DELETE", &path, Some(&holder), None)).await;
    assert_eq!((status, again["status"].as_str()), (StatusCode::OK, Some("REVOKED")), "idempotent");
    let events = h.audit.events();
    assert!(events.iter().any(|e| e.action == "lease_revoke" && e.reason == "revoked"));
    assert!(events.iter().any(|e| e.action == "lease_read" && e.reason == "lease_not_found"));
}

#[tokio::test]
async fn admins_revoke_in_bulk_and_force_while_others_cannot() {
    let h = harness();
    let app = app(&h, false);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, _, body) =
            send(&app, json_post(&json!({ "token": h.token(|_| {}), "grant": "ci/deploy" }))).await;
        ids.push(body["lease_id"].as_str().unwrap().to_owned());
    }
    let admin = h.token(|c| c["sub"] = json!("repo:acme/ops"));
    let holder = h.token(|_| {});
    let bulk = |token: &str, grant: Option<&str>, body: Value| {
        let mut request = lease_request("POST", "/v1/leases/revoke", Some(token), Some(body));
        if let Some(grant) = grant {
            request.headers_mut().insert(ADMIN_GRANT_HEADER, grant.parse().unwrap());
        }
        request
    };
    let by_holder =
        json!({ "holder": { "issuer": crate::broker::fixture::ISSUER, "subject": "repo:acme/app" } });
    let cases = [
        ("no admin header", bulk(&admin, None, by_holder.clone()), StatusCode::FORBIDDEN, "not_admin"),
        (
            "not an admin grant",
            bulk(&admin, Some("ci/api"), by_holder.clone()),
            StatusCode::FORBIDDEN,
            "not_admin",
        ),
        (
            "holder claims admin",
            bulk(&holder, Some("admins/leases"), by_holder.clone()),
            StatusCode::FORBIDDEN,
            "subject_mismatch",
        ),
        (
            "empty filter",
            bulk(&admin, Some("admins/leases"), json!({})),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (name, request, status, reason) in cases {
        let (got, _, body) = send(&app, request).await;
        assert_eq!((got, body["reason"].as_str()), (status, Some(reason)), "{name}: {body}");
    }

    // The backend refuses one revocation; force ends the lease anyway.
    *h.aws.fail_with.lock().unwrap() = None;
    let (status, _, body) = send(&app, bulk(&admin, Some("admins/leases"), by_holder.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut revoked: Vec<String> =
        body["revoked"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    revoked.sort();
    ids.sort();
    assert_eq!(revoked, ids);
    assert_eq!(h.aws.revoked.lock().unwrap().len(), 3, "each session revoked once at the backend");
    let (_, _, body) = send(&app, bulk(&admin, Some("admins/leases"), by_holder)).await;
    assert_eq!(body["revoked"].as_array().unwrap().len(), 0, "nothing live is left");

    let (status, _, body) = send(&app, {
        let mut r = lease_request(
            "POST",
            "/v1/admin/aws-role-cutoff",
            Some(&admin),
            Some(json!({"role_arn": "arn:aws:iam::000000000000:role/deploy"})),
        );
        r.headers_mut().insert(ADMIN_GRANT_HEADER, "admins/leases".parse().unwrap());
        r
    })
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("backend_unavailable")),
        "no AWS here"
    );
}

/// The token-exchange function holds no IAM access: revoking an STS lease through its lease
/// API answers `202` with the lease `REVOKING`, claimed for the revoker function, whose next
/// sweep ends it (and says who asked).
#[tokio::test]
async fn an_api_without_the_backend_hands_the_revocation_to_the_revoker() {
    let h = harness();
    let signed_tokens_only = crate::revoker::Revoker::new(
        crate::revoker::RevokerPorts {
            store: h.store.clone(),
            revokers: crate::backend::Revokers::default()
                .with(Arc::new(crate::issuer::token::SignedTokenExpiry)),
            clock: h.clock.clone(),
            audit: h.audit.clone(),
            metrics: Arc::new(crate::metrics::MemoryMetrics::default()),
        },
        crate::revoker::RevokerSettings::default(),
    );
    let app = app_with(&h, false, LeaseService::new(h.broker.clone(), signed_tokens_only, None));
    let (_, _, body) =
        send(&app, json_post(&json!({ "token": h.token(|_| {}), "grant": "ci/deploy" }))).await;
    let id = body["lease_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/leases/{id}");
    let holder = h.token(|_| {});

    let (status, _, lease) = send(&app, lease_request("DELETE", &path, Some(&holder), None)).await;
    assert_eq!((status, lease["status"].as_str()), (StatusCode::ACCEPTED, Some("REVOKING")), "{lease}");
    assert!(h.aws.revoked.lock().unwrap().is_empty(), "the API did not touch the backend");
    let (status, _, again) = send(&app, lease_request("DELETE", &path, Some(&holder), None)).await;
    assert_eq!((status, again["status"].as_str()), (StatusCode::ACCEPTED, Some("REVOKING")), "repeatable");

    let report = h
        .revoker()
        .sweep(&*h.store, "revoker-fn", tokio::time::Instant::now() + std::time::Duration::from_mins(1))
        .await
        .unwrap();
    assert_eq!(report.revoked, 1, "{report:?}");
    assert_eq!(h.aws.revoked.lock().unwrap().len(), 1, "the revoker ended the session once");
    let (status, _, ended) = send(&app, lease_request("GET", &path, Some(&holder), None)).await;
    assert_eq!((status, ended["status"].as_str()), (StatusCode::OK, Some("REVOKED")), "{ended}");
    let revoked =
        h.audit.events().into_iter().find(|e| e.action == "lease_revoke" && e.reason == "revoked").unwrap();
    assert!(revoked.request_id.contains("asked by holder:repo:acme/app"), "{}", revoked.request_id);
}

#[test]
fn a_bearer_token_never_reaches_debug_output() {
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    let printed = format!("{:?}", super::request::Bearer(Some(token.to_owned())));
    assert_eq!(printed, format!("Bearer(Some(<redacted, {} bytes>))", token.len()));
}
