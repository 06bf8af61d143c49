//! Requests a route answers without a server: `redirect`, `respond`, `static`.

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::reply::error_response;
use crate::cluster::route::RouteAction;

/// The answer of `action` to `req`.
pub async fn answer(action: &RouteAction, req: &Request<Incoming>) -> Response<ResponseBody> {
    match action {
        RouteAction::Redirect(redirect) => {
            let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = redirect.status;
            match HeaderValue::try_from(format!("{}{path}", redirect.to)) {
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                // The path came through hyper's parser; it is a valid header value.
                Err(_) => return error_response(http::StatusCode::BAD_REQUEST, false),
            }
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            response
        }
        RouteAction::Respond(fixed) => {
            let mut response = Response::new(ResponseBody::fixed(fixed.body.clone()));
            *response.status_mut() = fixed.status;
            response.headers_mut().insert(header::CONTENT_TYPE, fixed.content_type.clone());
            response
        }
        RouteAction::Static(site) => site.serve(req.method(), req.uri(), req.headers()).await,
        // Routed to the servers before this is reached.
        RouteAction::Backend(_) => error_response(http::StatusCode::INTERNAL_SERVER_ERROR, false),
    }
}
