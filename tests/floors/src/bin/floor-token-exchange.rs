//! Floor of token-exchange: the SDK configuration and the clients `app::exchange` creates, then
//! `lambda_http` with a handler that answers 200 and touches nothing.

use credbroker_floors::{ExchangeClients, sdk_config};
use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let clients = ExchangeClients::new(&sdk_config());
    if credbroker_floors::exercise_requested() {
        clients.exercise().await;
    }
    lambda_http::run(service_fn(move |_request: Request| {
        // Held by the handler, as the function's router holds its clients.
        let _clients = &clients;
        async move { Ok::<_, Error>(Response::new(Body::from("ok"))) }
    }))
    .await
}
