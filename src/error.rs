//! Errors, and the one place they become protocol error codes and close
//! codes.
//!
//! Layers have their own enums: `StoreError` (infrastructure, shared by the
//! store and the bus, so it lives here below both; `crate::store` re-exports
//! it), `ServiceError` (business rules, wrapping store errors). The gateway turns a
//! `ServiceError` into an `ApiError` with `ApiError::from`, which is the only
//! mapping to wire codes. Client mistakes are not logged as errors; internal
//! ones are logged once, with the correlation id the client sees. The
//! WebSocket close codes the node sends, with the reason text each carries,
//! are in `close`.

use std::sync::Arc;

use serde::Serialize;

/// An infrastructure failure of the store or the bus.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or timed out; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend failed a call (a connection error, a refused command);
    /// nothing was written. The backend's own error is kept as the source
    /// (shared, so the error stays `Clone`).
    #[error("store unavailable: {source}")]
    Backend {
        /// The backend's error (for Redis, a `redis::RedisError`).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A durable write reached the master, but too few replicas confirmed
    /// it in time (`--redis-replica-acks`): it may have been applied, or a
    /// failover may still take it back. Never retried here; a client retry
    /// with the same `client_msg_id` is safe.
    #[error("write not confirmed by replicas: {0}")]
    Unconfirmed(String),
    /// The backend answered with something we cannot read.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The circuit breaker is open: the backend failed repeatedly and is
    /// not asked again until a probe succeeds.
    #[error("store unavailable: circuit breaker open")]
    CircuitOpen,
}

impl StoreError {
    /// Whether a retry later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Backend { .. }
                | StoreError::CircuitOpen
                | StoreError::Unconfirmed(_)
        )
    }

    /// Whether trying again right away may succeed: the backend failed or
    /// timed out (not an open breaker, which refuses without asking).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Backend { .. }
        )
    }

    /// Wraps a backend's error, keeping it as the source.
    pub fn backend(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend {
            source: Arc::new(source),
        }
    }
}

/// Result of store and bus operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The complete set of protocol error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed frame, unknown type, missing or mistyped field, out of range.
    BadRequest,
    /// No valid `hello` yet, or a bad token.
    Unauthorized,
    /// The user may not do this.
    Forbidden,
    /// The room or message does not exist.
    NotFound,
    /// A business rule refused it.
    Conflict,
    /// The connection exceeded its rate.
    RateLimited,
    /// A field exceeds its length limit.
    TooLarge,
    /// The store is unreachable; nothing was written.
    Unavailable,
    /// A bug.
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status for this code (REST endpoints).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// Every code, for pre-registering metrics.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];
}

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// Protocol code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// For `rate_limited`: how long to wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

/// The close codes the node sends, and the reason text of each.
pub mod close {
    use super::ErrorCode;

    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Client silent past the idle timeout.
    pub const IDLE: u16 = 1001;
    /// The client broke the WebSocket protocol (an unmasked frame, reserved
    /// bits or opcodes).
    pub const PROTOCOL: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const NOT_UTF8: u16 = 1007;
    /// Frame larger than `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The node is shutting down.
    pub const RESTART: u16 = 1012;
    /// The client does not read its frames (its outbound queue is full, or
    /// it took nothing for the idle timeout).
    pub const SLOW: u16 = 1013;
    /// Bad or expired token.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Sustained abuse of the rate limit.
    pub const ABUSE: u16 = 4008;
    /// No close frame: the socket failed or the client closed first.
    pub const NONE: u16 = 0;

    /// The reason text sent with a close code.
    pub fn reason(code: u16) -> &'static str {
        match code {
            IDLE => "idle timeout",
            TOO_BIG => "frame too large",
            PROTOCOL => "websocket protocol error",
            NOT_UTF8 => "text frame is not utf-8",
            RESTART => "node restarting; reconnect and resume with since",
            SLOW => "outbound queue full; read faster",
            UNAUTHORIZED => "unauthorized",
            ABUSE => "rate limit abused",
            _ => "",
        }
    }

    /// The close that follows a refused request, if any: a `hello` refused
    /// as unauthorized (a bad or expired token) ends the connection.
    pub fn after_refusal(verb: &str, code: ErrorCode) -> Option<u16> {
        (verb == "hello" && code == ErrorCode::Unauthorized).then_some(UNAUTHORIZED)
    }
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store or bus could not be set up.
    #[error("cannot set up Redis: {0}")]
    Redis(#[from] StoreError),
}

/// Errors of the service layer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A value is missing, malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The caller is not authenticated.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A business rule refused it.
    #[error("{0}")]
    Conflict(String),
    /// A field is longer than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// A limit of the user or their address is used up for now.
    #[error("{message}")]
    RateLimited {
        /// What is limited, in words.
        message: String,
        /// When a retry may pass.
        retry_after: std::time::Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// The protocol code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::BadRequest(_) => ErrorCode::BadRequest,
            ServiceError::Unauthorized(_) => ErrorCode::Unauthorized,
            ServiceError::Forbidden(_) => ErrorCode::Forbidden,
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::Conflict(_) => ErrorCode::Conflict,
            ServiceError::TooLarge(_) => ErrorCode::TooLarge,
            ServiceError::RateLimited { .. } => ErrorCode::RateLimited,
            ServiceError::Store(e) if e.is_unavailable() => ErrorCode::Unavailable,
            ServiceError::Store(_) => ErrorCode::Internal,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        match code {
            ErrorCode::Unavailable
                if matches!(err, ServiceError::Store(StoreError::Unconfirmed(_))) =>
            {
                tracing::warn!(error = %err, "a write was not confirmed by the replicas");
                ApiError::new(
                    code,
                    "the write may have been applied, but the Redis replicas did not confirm it \
                     in time; retrying is safe (a send with the same client_msg_id is stored once)",
                )
            }
            ErrorCode::Unavailable => ApiError::new(
                code,
                "the store is unavailable; nothing was written, retry later",
            ),
            ErrorCode::Internal => {
                let correlation = uuid::Uuid::new_v4().simple().to_string();
                tracing::error!(%correlation, error = %err, "internal error");
                ApiError::new(
                    code,
                    format!("internal error (correlation id {correlation})"),
                )
            }
            _ => {
                let mut api = ApiError::new(code, err.to_string());
                if let ServiceError::RateLimited { retry_after, .. } = err {
                    api.retry_after_ms = Some((retry_after.as_millis() as u64).max(1));
                }
                api
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn store_errors_map_to_unavailable_or_internal() {
        let e = ServiceError::from(StoreError::Unavailable("down".into()));
        assert_eq!(ApiError::from(e).code, ErrorCode::Unavailable);
        let e = ServiceError::from(StoreError::Unconfirmed("0 of 1".into()));
        let api = ApiError::from(e);
        assert_eq!(api.code, ErrorCode::Unavailable);
        assert!(
            api.message.contains("may have been applied"),
            "{}",
            api.message
        );
        assert!(api.message.contains("client_msg_id"), "{}", api.message);
        assert!(
            !StoreError::Unconfirmed("x".into()).is_transient(),
            "never retried blindly"
        );
        let e = ServiceError::from(StoreError::Corrupt("bad".into()));
        let api = ApiError::from(e);
        assert_eq!(api.code, ErrorCode::Internal);
        assert!(api.message.contains("correlation id"), "{}", api.message);
    }

    #[test]
    fn only_an_unauthorized_hello_closes() {
        assert_eq!(
            close::after_refusal("hello", ErrorCode::Unauthorized),
            Some(close::UNAUTHORIZED)
        );
        assert_eq!(close::after_refusal("hello", ErrorCode::BadRequest), None);
        assert_eq!(close::after_refusal("ping", ErrorCode::Unauthorized), None);
        assert_eq!(
            close::reason(close::RESTART),
            "node restarting; reconnect and resume with since"
        );
        assert_eq!(close::reason(close::NORMAL), "");
    }

    #[test]
    fn limits_carry_their_retry_time() {
        let api = ApiError::from(ServiceError::RateLimited {
            message: "slow down".into(),
            retry_after: std::time::Duration::from_millis(1500),
        });
        assert_eq!(api.code, ErrorCode::RateLimited);
        assert_eq!(api.retry_after_ms, Some(1500));
        assert_eq!(api.message, "slow down");
    }

    #[test]
    fn rule_errors_keep_their_message() {
        let api = ApiError::from(ServiceError::Conflict("room is full".into()));
        assert_eq!(api.code, ErrorCode::Conflict);
        assert_eq!(api.message, "room is full");
        let json = serde_json::to_value(&api).expect("json");
        assert!(json.get("retry_after_ms").is_none());
    }
}
