//! The HTTP API beside the WebSocket: `GET /api/rooms/{id}/messages`, the
//! history verb over HTTP for clients that only need to read.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::{Body, bearer_token, json, text};
use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use crate::protocol::replies::HistoryData;

/// `GET /api/rooms/{id}/messages?before=&limit=`: `message.history` over
/// HTTP. With a JWT secret it needs `Authorization: Bearer <token>` and
/// participation, like the WebSocket verb; in guest mode it is open for
/// public rooms.
pub(super) async fn rest_history(app: &App, req: &Request<Incoming>) -> Response<Body> {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a ApiError,
    }
    let fail = |err: ApiError| {
        let status = StatusCode::from_u16(err.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        app.metrics().error(err.code);
        json(status, &ErrorBody { error: &err })
    };
    let path = req.uri().path();
    let Some(room) = path
        .strip_prefix("/api/rooms/")
        .and_then(|rest| rest.strip_suffix("/messages"))
        .filter(|r| !r.is_empty() && !r.contains('/'))
    else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let mut before = None;
    let mut limit = None;
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "before" if !value.is_empty() => match value.parse::<u64>() {
                Ok(v) => before = Some(v),
                Err(_) => {
                    return fail(ApiError::bad_request(
                        "`before` must be a seq (an unsigned integer)",
                    ));
                }
            },
            "limit" if !value.is_empty() => match value.parse::<i64>() {
                Ok(v) => limit = Some(v),
                Err(_) => return fail(ApiError::bad_request("`limit` must be an integer")),
            },
            _ => {}
        }
    }
    let page = if app.sessions().requires_token() {
        let Some(token) = bearer_token(req) else {
            return fail(ApiError::new(
                ErrorCode::Unauthorized,
                "send Authorization: Bearer <token>",
            ));
        };
        match app.sessions().authenticate(Some(token), None, None) {
            Ok(user) => app.messages().history(&user, room, before, limit).await,
            Err(e) => Err(e),
        }
    } else {
        app.messages().history_public(room, before, limit).await
    };
    match page {
        Ok(page) => json(
            StatusCode::OK,
            &HistoryData {
                messages: &page.messages,
                has_more: page.has_more,
            },
        ),
        Err(e) => fail(e.into()),
    }
}
