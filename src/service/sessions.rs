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

use super::{text_field, url_field};
use crate::error::ServiceError;
use crate::model::{User, now_ms};
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
}

/// Session rules.
#[derive(Clone)]
pub struct SessionService {
    sessions: Arc<dyn SessionStore>,
    secret: Option<Arc<str>>,
    node: Arc<str>,
    instance: Arc<str>,
    ttl: Duration,
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
    ) -> SessionService {
        SessionService {
            sessions,
            secret: secret.map(Arc::from),
            node: Arc::from(node),
            instance: Arc::from(instance),
            ttl,
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
                name: text_field("name", name, 64)?,
                image: image.map(|i| url_field("image", i)).transpose()?,
            });
        };
        let token = token.ok_or_else(|| {
            ServiceError::Unauthorized("this node requires a token in `hello`".into())
        })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map_err(|e| ServiceError::Unauthorized(format!("invalid token: {e}")))?
        .claims;
        let bad = |e: ServiceError| ServiceError::Unauthorized(format!("invalid token: {e}"));
        let id = text_field("sub", &claims.sub, 128).map_err(bad)?;
        let name = match claims.name.as_deref().or(name) {
            Some(n) => text_field("name", n, 64)?,
            None => id.chars().take(64).collect(),
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
        self.sessions.open(&record, self.ttl).await?;
        self.record_activity(user, 0).await;
        Ok(())
    }

    /// Updates the user's activity record; a failure is only logged, it
    /// must not fail the request that caused it.
    pub async fn record_activity(&self, user: &User, messages_sent: u64) {
        if let Err(e) = self.sessions.record_activity(&user.id, messages_sent).await {
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
        )
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "user-7".into(),
            name: Some("Bea".into()),
            image: None,
            exp,
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
}
