//! Running the router in Lambda: lift what API Gateway knows (source address, request id)
//! into request extensions, then hand every request to the same axum router.

use std::net::IpAddr;

use axum::Router;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use tower::ServiceBuilder;

use super::request::{ClientAddr, FrontRequestId};

pub async fn run_lambda(router: Router) -> Result<(), lambda_http::Error> {
    let service = ServiceBuilder::new().map_request(lift_request_context).service(router);
    lambda_http::run(service).await
}

fn lift_request_context(mut req: Request) -> Request {
    let (source_ip, request_id) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => (ctx.identity.source_ip.clone(), ctx.request_id.clone()),
        Some(RequestContext::ApiGatewayV2(ctx)) => (ctx.http.source_ip.clone(), ctx.request_id.clone()),
        _ => (None, None),
    };
    let request_id = request_id.or_else(|| req.lambda_context_ref().map(|c| c.request_id.clone()));
    if let Some(ip) = source_ip.and_then(|s| s.parse::<IpAddr>().ok()) {
        req.extensions_mut().insert(ClientAddr(ip));
    }
    if let Some(id) = request_id.filter(|id| !id.is_empty()) {
        req.extensions_mut().insert(FrontRequestId(id));
    }
    req
}
