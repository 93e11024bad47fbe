//! `SessionService`: who a connection is, and its session record.
//!
//! Guest mode (no secret): `hello` carries `name` (1–64 characters) and the
//! server assigns a fresh user id. With a secret, `hello` carries an HS256
//! JWT whose `sub` is the user id and whose `name`/`image` claims win over
//! the frame's fields; a missing, bad or expired token is `unauthorized`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{display_name, text_field, url_field};
use crate::error::ServiceError;
use crate::model::{User, now_ms, system_user};
use crate::store::{SessionRecord, SessionStore};

/// The claims Huddle reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds; a token from the future is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
const LEEWAY_SECS: u64 = 5;

/// What a client is told about a token that was refused: the kind of
/// problem in our words, never the library's.
fn token_refusal(e: &jsonwebtoken::errors::Error) -> ServiceError {
    use jsonwebtoken::errors::ErrorKind;
    let why = match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not match".to_owned(),
        ErrorKind::InvalidAlgorithm => "the token must be signed with HS256".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is malformed"),
        _ => "the token is malformed".to_owned(),
    };
    tracing::debug!(error = %e, "token refused");
    ServiceError::Unauthorized(format!("invalid token: {why}"))
}

/// Session rules.
#[derive(Clone)]
pub struct SessionService {
    sessions: Arc<dyn SessionStore>,
    secret: Option<Arc<str>>,
    node: Arc<str>,
    instance: Arc<str>,
    /// Session record TTL.
    ttl: Duration,
    /// How long a token user's activity record lives.
    user_activity_ttl: Duration,
}

/// Signs a token (for `huddle token` and tests).
pub fn sign(secret: &str, claims: &Claims) -> Result<String, ServiceError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| ServiceError::BadRequest(format!("cannot sign token: {e}")))
}

impl SessionService {
    /// Rules over the given store.
    pub fn new(
        sessions: Arc<dyn SessionStore>,
        secret: Option<String>,
        node: String,
        instance: String,
        ttl: Duration,
        user_activity_ttl: Duration,
    ) -> SessionService {
        SessionService {
            sessions,
            secret: secret.map(Arc::from),
            node: Arc::from(node),
            instance: Arc::from(instance),
            ttl,
            user_activity_ttl,
        }
    }

    /// How long a user's activity record lives: a guest's id is never seen
    /// again after its connection, so its record lives no longer than the
    /// session; a token user's lives for the message TTL.
    fn activity_ttl(&self) -> Duration {
        if self.secret.is_some() {
            self.user_activity_ttl
        } else {
            self.ttl
        }
    }

    /// Whether `hello` needs a token.
    pub fn requires_token(&self) -> bool {
        self.secret.is_some()
    }

    /// Who says `hello`.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        name: Option<&str>,
        image: Option<&str>,
    ) -> Result<User, ServiceError> {
        let Some(secret) = &self.secret else {
            let name = name.ok_or_else(|| {
                ServiceError::BadRequest("`name` is required in guest mode".into())
            })?;
            return Ok(User {
                id: uuid::Uuid::new_v4().to_string(),
                name: display_name("name", name)?,
                image: image.map(|i| url_field("image", i)).transpose()?,
            });
        };
        let token = token.ok_or_else(|| {
            ServiceError::Unauthorized("this node requires a token in `hello`".into())
        })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map_err(|e| token_refusal(&e))?
        .claims;
        let bad = |e: ServiceError| ServiceError::Unauthorized(format!("invalid token: {e}"));
        if claims
            .iat
            .is_some_and(|iat| iat > now_ms() / 1000 + LEEWAY_SECS)
        {
            return Err(bad(ServiceError::Unauthorized(
                "it was issued in the future (iat)".into(),
            )));
        }
        let id = text_field("sub", &claims.sub, 128).map_err(bad)?;
        if id == system_user().id {
            return Err(bad(ServiceError::Unauthorized(format!(
                "`sub` {id:?} is reserved for the server"
            ))));
        }
        let name = match claims.name.as_deref().or(name) {
            Some(n) => display_name("name", n)?,
            None => display_name("name", &id.chars().take(64).collect::<String>())?,
        };
        let image = claims
            .image
            .as_deref()
            .or(image)
            .map(|i| url_field("image", i))
            .transpose()?;
        Ok(User { id, name, image })
    }

    /// The node id sessions are recorded under.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records a connection's session.
    pub async fn open(&self, conn: &str, user: &User) -> Result<(), ServiceError> {
        let record = SessionRecord {
            conn: conn.to_owned(),
            user: user.clone(),
            node: self.node.to_string(),
            instance: self.instance.to_string(),
            connected_at: now_ms(),
        };
        // Independent writes: both at once (one round trip, not two).
        let (opened, ()) = tokio::join!(
            self.sessions.open(&record, self.ttl),
            self.record_activity(user, 0)
        );
        Ok(opened?)
    }

    /// Updates the user's activity record; a failure is only logged, it
    /// must not fail the request that caused it.
    pub async fn record_activity(&self, user: &User, messages_sent: u64) {
        if let Err(e) = self
            .sessions
            .record_activity(&user.id, messages_sent, self.activity_ttl())
            .await
        {
            tracing::debug!(user = %user.id, error = %e, "could not record activity");
        }
    }

    /// Removes a connection's session, recording the user's activity.
    pub async fn close(
        &self,
        conn: &str,
        user: &User,
        messages_sent: u64,
    ) -> Result<(), ServiceError> {
        self.record_activity(user, messages_sent).await;
        Ok(self.sessions.close(conn, &user.id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::MemoryBus;
    use crate::error::ErrorCode;
    use crate::store::{MemoryStore, StoreSettings};

    struct NoSink;
    impl crate::events::EventSink for NoSink {
        fn deliver(&self, _: &str, _: &[u8]) {}
    }

    fn service(secret: Option<&str>) -> SessionService {
        let store = Arc::new(MemoryStore::new(StoreSettings::default(), Arc::new(NoSink)));
        let _bus = MemoryBus::new(Arc::new(NoSink));
        SessionService::new(
            store,
            secret.map(str::to_owned),
            "n1".into(),
            "n1/test".into(),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        )
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "user-7".into(),
            name: Some("Bea".into()),
            image: None,
            exp,
            nbf: None,
            iat: None,
        }
    }

    #[test]
    fn guests_get_fresh_ids() {
        let s = service(None);
        let a = s.authenticate(None, Some("Ann"), None).expect("guest");
        let b = s.authenticate(None, Some("Ann"), None).expect("guest");
        assert_ne!(a.id, b.id);
        assert_eq!(
            s.authenticate(None, None, None).unwrap_err().code(),
            ErrorCode::BadRequest
        );
        assert_eq!(
            s.authenticate(None, Some(&"x".repeat(65)), None)
                .unwrap_err()
                .code(),
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn tokens_are_checked() {
        let secret = "0123456789abcdef0123";
        let s = service(Some(secret));
        let exp = now_ms() / 1000 + 3600;
        let token = sign(secret, &claims(exp)).expect("sign");
        let user = s
            .authenticate(Some(&token), Some("Ignored"), None)
            .expect("valid");
        assert_eq!((user.id.as_str(), user.name.as_str()), ("user-7", "Bea"));
        let code = |t: Option<&str>| s.authenticate(t, Some("x"), None).unwrap_err().code();
        assert_eq!(code(None), ErrorCode::Unauthorized);
        assert_eq!(code(Some("garbage")), ErrorCode::Unauthorized);
        let expired = sign(secret, &claims(now_ms() / 1000 - 3600)).expect("sign");
        assert_eq!(code(Some(&expired)), ErrorCode::Unauthorized);
        let other = sign("another-secret-entirely", &claims(exp)).expect("sign");
        assert_eq!(code(Some(&other)), ErrorCode::Unauthorized);
    }

    #[test]
    fn tokens_from_the_future_or_for_the_system_user_are_refused() {
        let secret = "0123456789abcdef0123";
        let s = service(Some(secret));
        let now = now_ms() / 1000;
        let refused = |claims: &Claims| {
            let token = sign(secret, claims).expect("sign");
            s.authenticate(Some(&token), None, None)
                .expect_err("refused")
        };
        let mut c = claims(now + 3600);
        c.nbf = Some(now + 600);
        let err = refused(&c);
        assert_eq!(err.code(), ErrorCode::Unauthorized);
        assert!(err.to_string().contains("not valid yet"), "{err}");
        let mut c = claims(now + 3600);
        c.iat = Some(now + 600);
        assert!(refused(&c).to_string().contains("issued in the future"));
        let mut c = claims(now + 3600);
        c.sub = "system".into();
        assert!(refused(&c).to_string().contains("reserved"));
        let mut c = claims(now + 3600);
        c.name = Some("Huddle".into());
        assert_eq!(refused(&c).code(), ErrorCode::BadRequest);
        // Within the leeway, and in the past, both pass.
        let mut c = claims(now + 3600);
        c.nbf = Some(now + 2);
        c.iat = Some(now - 60);
        let token = sign(secret, &c).expect("sign");
        assert!(s.authenticate(Some(&token), None, None).is_ok());
    }

    #[test]
    fn refusals_speak_our_words_not_the_librarys() {
        let secret = "0123456789abcdef0123";
        let s = service(Some(secret));
        let message = |token: &str| {
            s.authenticate(Some(token), None, None)
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(message("garbage"), "invalid token: the token is malformed");
        assert_eq!(
            message("e30.e30.e30"),
            "invalid token: the token is malformed"
        );
        let other = sign("another-secret-entirely", &claims(now_ms() / 1000 + 60)).expect("sign");
        assert_eq!(
            message(&other),
            "invalid token: the token's signature does not match"
        );
        let expired = sign(secret, &claims(now_ms() / 1000 - 3600)).expect("sign");
        assert_eq!(message(&expired), "invalid token: the token has expired");
    }

    #[test]
    fn guest_names_cannot_impersonate_the_server() {
        let s = service(None);
        for name in ["Huddle", "Ann\u{202E}", "\u{3164}"] {
            assert_eq!(
                s.authenticate(None, Some(name), None).unwrap_err().code(),
                ErrorCode::BadRequest,
                "{name:?}"
            );
        }
    }
}
