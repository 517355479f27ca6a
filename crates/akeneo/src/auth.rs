//! Access tokens: password grant, refresh_token grant (falling back to the password grant),
//! renewal before expiry, one grant shared by all concurrent callers, or a fixed App token.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use reqwest::header::CONTENT_TYPE;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::AkeneoError;
use crate::stats::inc;
use crate::Inner;

/// A bearer token and the generation it belongs to (to renew it only once after a 401).
#[derive(Clone)]
pub(crate) struct Token {
    pub access: Arc<SecretString>,
    pub generation: u64,
}

#[derive(Default)]
struct TokenState {
    access: Option<Arc<SecretString>>,
    refresh: Option<SecretString>,
    /// Renew (refresh grant) from this moment on, when the PIM said when the token expires.
    renew_at: Option<Instant>,
    /// The token is not used any more from this moment on.
    expires_at: Option<Instant>,
    generation: u64,
    /// Grants attempted so far, and how the last one failed (shared with the callers that
    /// waited for it, so a failing grant is not repeated once per waiting caller).
    attempts: u64,
    last_failure: Option<(Option<u16>, String, bool)>,
}

pub(crate) struct Auth {
    app_token: Option<Arc<SecretString>>,
    state: RwLock<TokenState>,
    /// Held while a grant is running: concurrent callers wait for that one grant.
    grant: tokio::sync::Mutex<()>,
}

#[derive(Serialize)]
struct PasswordGrant<'a> {
    grant_type: &'static str,
    username: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
struct RefreshGrant<'a> {
    grant_type: &'static str,
    refresh_token: &'a str,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The JSON body of the password grant (Akeneo caps token request bodies at 200 bytes).
pub(crate) fn password_grant_body(username: &str, password: &SecretString) -> Vec<u8> {
    serde_json::to_vec(&PasswordGrant {
        grant_type: "password",
        username,
        password: password.expose_secret(),
    })
    .expect("serialisable")
}

impl Auth {
    pub fn new(app_token: Option<SecretString>) -> Self {
        Self {
            app_token: app_token.map(Arc::new),
            state: RwLock::new(TokenState::default()),
            grant: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a refused token can be replaced (not with a fixed App token).
    pub fn can_renew(&self) -> bool {
        self.app_token.is_none()
    }

    fn current(&self) -> Option<Token> {
        let s = self.state.read();
        let access = s.access.as_ref()?;
        if s.renew_at.is_some_and(|t| Instant::now() >= t) {
            return None;
        }
        Some(Token {
            access: access.clone(),
            generation: s.generation,
        })
    }

    /// Forgets the access token of `generation` (the PIM answered 401 with it), unless a newer
    /// one has replaced it already. The refresh token is kept.
    pub fn invalidate(&self, generation: u64) {
        let mut s = self.state.write();
        if s.generation == generation {
            s.access = None;
            s.renew_at = None;
            s.expires_at = None;
        }
    }

    /// A usable token: the cached one, or a new one from one grant shared by all callers.
    pub async fn token(&self, inner: &Inner) -> Result<Token, AkeneoError> {
        if let Some(t) = &self.app_token {
            return Ok(Token {
                access: t.clone(),
                generation: 0,
            });
        }
        if inner.config.fresh_token_per_request {
            // Benchmark baseline: one password grant per call, nothing cached or shared.
            let t = self.password_grant(inner).await?;
            return Ok(Token {
                access: Arc::new(SecretString::from(t.access_token)),
                generation: u64::MAX,
            });
        }
        if let Some(t) = self.current() {
            return Ok(t);
        }
        let seen_attempts = self.state.read().attempts;
        let _grant = self.grant.lock().await;
        if let Some(t) = self.current() {
            return Ok(t);
        }
        {
            let s = self.state.read();
            if s.attempts != seen_attempts {
                if let Some((status, message, transient)) = &s.last_failure {
                    // The grant we waited for failed: share its failure.
                    return Err(if *transient {
                        AkeneoError::Transient {
                            status: *status,
                            message: message.clone(),
                        }
                    } else {
                        AkeneoError::Auth {
                            status: status.unwrap_or(422),
                            message: message.clone(),
                        }
                    });
                }
            }
        }
        let (refresh, still_valid) = {
            let s = self.state.read();
            let still_valid = match (&s.access, s.expires_at) {
                (Some(a), Some(exp)) if Instant::now() < exp => Some(Token {
                    access: a.clone(),
                    generation: s.generation,
                }),
                _ => None,
            };
            (
                s.refresh
                    .as_ref()
                    .map(|r| SecretString::from(r.expose_secret().to_owned())),
                still_valid,
            )
        };
        let granted = match refresh {
            Some(refresh) => match self.refresh_grant(inner, &refresh).await {
                Ok(t) => {
                    inc(&inner.stats.token_refreshes);
                    Ok(t)
                }
                Err(e) if e.is_transient() => {
                    // The current token still works for a while: keep using it.
                    if let Some(t) = still_valid {
                        tracing::warn!(error = %e, "akeneo token refresh failed; using the current token until it expires");
                        return Ok(t);
                    }
                    Err(e)
                }
                Err(e) => {
                    inc(&inner.stats.refresh_failures);
                    tracing::info!(error = %e, "akeneo refresh token refused; using the password grant");
                    self.password_grant(inner).await
                }
            },
            None => self.password_grant(inner).await,
        };
        let mut s = self.state.write();
        s.attempts += 1;
        match granted {
            Ok(t) => {
                s.last_failure = None;
                drop(s);
                Ok(self.store(t))
            }
            Err(e) => {
                s.last_failure = Some((e.status(), e.message(), e.is_transient()));
                Err(e)
            }
        }
    }

    fn store(&self, t: TokenResponse) -> Token {
        let mut s = self.state.write();
        let now = Instant::now();
        s.generation += 1;
        s.access = Some(Arc::new(SecretString::from(t.access_token)));
        if let Some(r) = t.refresh_token {
            s.refresh = Some(SecretString::from(r));
        }
        // A lifetime too long for the clock (a PIM answering nonsense) is no expiry: the token
        // is then renewed on its first 401.
        match t.expires_in.and_then(|secs| {
            let ttl = Duration::from_secs(secs);
            now.checked_add(ttl).map(|exp| (ttl, exp))
        }) {
            Some((ttl, expires_at)) => {
                // Renew a little before expiry: a quarter of the lifetime, at most 60 s early.
                let margin = (ttl / 4).min(Duration::from_secs(60));
                s.renew_at = Some(expires_at - margin);
                s.expires_at = Some(expires_at);
            }
            None => {
                s.renew_at = None;
                s.expires_at = None;
            }
        }
        Token {
            access: s.access.clone().expect("just set"),
            generation: s.generation,
        }
    }

    async fn password_grant(&self, inner: &Inner) -> Result<TokenResponse, AkeneoError> {
        inc(&inner.stats.password_grants);
        let body = password_grant_body(&inner.config.username, &inner.config.password);
        self.grant_request(inner, "token (password grant)", body)
            .await
    }

    async fn refresh_grant(
        &self,
        inner: &Inner,
        refresh: &SecretString,
    ) -> Result<TokenResponse, AkeneoError> {
        let body = serde_json::to_vec(&RefreshGrant {
            grant_type: "refresh_token",
            refresh_token: refresh.expose_secret(),
        })
        .expect("serialisable");
        if body.len() > crate::config::TOKEN_BODY_MAX_BYTES {
            // Akeneo would refuse it (422 "The request content size is too large").
            return Err(AkeneoError::Auth {
                status: 422,
                message: "refresh token too long for the 200-byte token request".into(),
            });
        }
        self.grant_request(inner, "token (refresh grant)", body)
            .await
    }

    async fn grant_request(
        &self,
        inner: &Inner,
        op: &str,
        body: Vec<u8>,
    ) -> Result<TokenResponse, AkeneoError> {
        let url = inner.token_url.clone();
        let client_id = inner.config.client_id.clone();
        let secret = SecretString::from(inner.config.secret.expose_secret().to_owned());
        let body = bytes::Bytes::from(body);
        let mut make = move |http: &reqwest::Client| {
            http.post(url.clone())
                .basic_auth(&client_id, Some(secret.expose_secret()))
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        // Boxed: `execute` itself asks for tokens (async recursion).
        let r = Box::pin(inner.execute(op, false, inner.timeout(), &mut make)).await?;
        if r.status.is_success() {
            return r
                .json::<TokenResponse>()
                .map_err(|_| AkeneoError::Protocol {
                    status: r.code(),
                    message: "token response without access_token".into(),
                });
        }
        let (message, _) = r.message_and_errors();
        Err(AkeneoError::Auth {
            status: r.code(),
            message,
        })
    }
}
