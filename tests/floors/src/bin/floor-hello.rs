//! Hello-world `lambda_runtime` function: echoes its payload. No SDK, no clients: the context
//! row of the cold-init benchmark (the published Rust Lambda floor).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<_, Error>(event.payload) }))
        .await
}
