//! A minimal Lambda Runtime API emulator: enough of `/2018-06-01/runtime/*` to run a real
//! `bootstrap` binary as Lambda would, one invocation at a time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

use crate::process::{Running, binary};

#[derive(Debug)]
pub enum Outcome {
    Response(Value),
    Error(Value),
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<VecDeque<(String, Value)>>,
    ready: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<Value>>,
    next_calls: Mutex<usize>,
    /// When the first `GET …/invocation/next` arrived (the end of the function's init).
    first_next: Mutex<Option<Instant>>,
    first_next_seen: Notify,
}

#[derive(Debug)]
pub struct RuntimeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    counter: Mutex<u64>,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task, counter: Mutex::new(0) }
    }

    /// Spawns a workspace binary as a Lambda function attached to this emulator.
    pub fn spawn_function(&self, binary_name: &str, env: &[(&str, String)]) -> Running {
        Running::spawn(self.function_command(&binary(binary_name), binary_name, env))
    }

    /// The command [`Self::spawn_function`] runs: the binary at `path` with a clean
    /// environment as Lambda sets it (function name `function_name`) plus `env`, attached to
    /// this emulator. For callers that spawn and watch the process themselves (benchmarks).
    pub fn function_command(
        &self,
        path: &std::path::Path,
        function_name: &str,
        env: &[(&str, String)],
    ) -> Command {
        let mut command = Command::new(path);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", self.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function_name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_REGION", "us-east-1")
            // lambda_http would otherwise keep the REST API stage in the path.
            .env("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true");
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    /// Number of `GET …/invocation/next` calls so far (the runtime is ready after the first).
    pub fn next_calls(&self) -> usize {
        *self.shared.next_calls.lock().expect("lock")
    }

    /// When the first `GET …/invocation/next` arrived, if it has.
    pub fn first_next_at(&self) -> Option<Instant> {
        *self.shared.first_next.lock().expect("lock")
    }

    /// Waits up to `timeout` for the first `GET …/invocation/next` (the runtime finished its
    /// init); returns when it arrived, or `None` on timeout.
    pub async fn wait_first_next(&self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a call arriving in between is not missed.
            let seen = self.shared.first_next_seen.notified();
            if let Some(at) = self.first_next_at() {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, seen).await.is_err() {
                return self.first_next_at();
            }
        }
    }

    pub fn init_error(&self) -> Option<Value> {
        self.shared.init_error.lock().expect("lock").clone()
    }

    /// Invokes the function with `payload` and waits for its outcome.
    pub async fn invoke(&self, payload: Value) -> Outcome {
        let id = {
            let mut counter = self.counter.lock().expect("lock");
            *counter += 1;
            format!("req-{}-{}", self.addr.port(), *counter)
        };
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().expect("lock").insert(id.clone(), tx);
        self.shared.queue.lock().expect("lock").push_back((id, payload));
        self.shared.ready.notify_one();
        match tokio::time::timeout(Duration::from_mins(1), rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => panic!("no answer from the function within 60 s (init error: {:?})", self.init_error()),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let arrived = Instant::now();
    *shared.next_calls.lock().expect("lock") += 1;
    let first = shared.first_next.lock().expect("lock").get_or_insert(arrived) == &arrived;
    if first {
        shared.first_next_seen.notify_waiters();
    }
    loop {
        let job = shared.queue.lock().expect("lock").pop_front();
        if let Some((id, payload)) = job {
            let mut headers = HeaderMap::new();
            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
            headers.insert("lambda-runtime-aws-request-id", HeaderValue::from_str(&id).expect("id"));
            headers.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from_str(&deadline.to_string()).expect("ms"),
            );
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:test"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (headers, payload.to_string());
        }
        shared.ready.notified().await;
    }
}

fn settle(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match shared.waiting.lock().expect("lock").remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    settle(&shared, &id, Outcome::Response(value))
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    settle(&shared, &id, Outcome::Error(value))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    *shared.init_error.lock().expect("lock") = Some(value);
    StatusCode::ACCEPTED
}

/// An API Gateway REST (v1) proxy event, as API Gateway sends it to the function.
pub fn rest_api_event(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    source_ip: &str,
) -> Value {
    let header_map: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    let multi: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| ((*k).to_owned(), json!([v]))).collect();
    json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": header_map,
        "multiValueHeaders": multi,
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": { "proxy": path.trim_start_matches('/') },
        "stageVariables": null,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": format!("/dev{path}"),
            "accountId": "000000000000",
            "protocol": "HTTP/1.1",
            "stage": "dev",
            "domainPrefix": "api",
            "requestId": "apigw-request-1",
            "requestTimeEpoch": 0,
            "identity": { "sourceIp": source_ip, "userAgent": "credbroker-tests" },
            "domainName": "api.execute-api.localhost",
            "apiId": "api"
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// Status and parsed JSON body of an API Gateway proxy response.
pub fn proxy_response(outcome: Outcome) -> (u16, Value) {
    let Outcome::Response(value) = outcome else { panic!("function failed: {outcome:?}") };
    let status = u16::try_from(value["statusCode"].as_u64().expect("statusCode")).expect("status");
    let body = value["body"].as_str().map_or(Value::Null, |b| serde_json::from_str(b).unwrap_or(json!(b)));
    (status, body)
}

/// An EventBridge scheduled event, as the revoker's schedule delivers it.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": chrono::Utc::now().to_rfc3339(),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/credbroker-revoker"],
        "detail": {}
    })
}
