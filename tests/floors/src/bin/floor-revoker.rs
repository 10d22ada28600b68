//! Floor of the revoker: the SDK configuration and the clients `app::revoker` creates,
//! then `lambda_runtime` with a handler that echoes the scheduled event.

use credbroker_floors::{RevokerClients, sdk_config};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let clients = RevokerClients::new(&sdk_config());
    if credbroker_floors::exercise_requested() {
        clients.exercise().await;
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        // Held by the handler, as the function's handler holds its revoker.
        let _clients = &clients;
        async move { Ok::<_, Error>(event.payload) }
    }))
    .await
}
