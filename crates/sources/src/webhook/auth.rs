//! Authentication of generic webhooks: an HMAC-SHA256 signature of the raw body, or an API key
//! header. Both compare in constant time.

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

fn default_signature_header() -> String {
    "X-Signature".to_owned()
}
fn default_tolerance_secs() -> u64 {
    300
}

/// How a generic webhook proves it comes from the DAM. In TOML:
/// `auth.hmac = { secret = "..." }` or `auth.api_key = { header = "X-Api-Key", key = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookAuth {
    /// An HMAC-SHA256 signature of the raw body in a header.
    Hmac(HmacAuth),
    /// A shared key in a header (e.g. Amazon EventBridge API destinations with API-key
    /// authorization).
    ApiKey(ApiKeyAuth),
}

/// The encoding of an HMAC signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lower- or upper-case hex (the default).
    #[default]
    Hex,
    /// Standard base64 (with padding).
    Base64,
}

/// HMAC-SHA256 over the **raw** request body (never a re-serialisation).
///
/// Without `timestamp_header` the MAC covers the body. With it, the MAC covers
/// `"{timestamp}.{body}"` (the header's text, a dot, the raw body — the Stripe/Slack scheme) and
/// a timestamp further than `tolerance_secs` from now is refused (replay protection).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The shared secret (its UTF-8 bytes are the HMAC key). Never logged.
    pub secret: SecretString,
    /// The header carrying the signature. Default: `"X-Signature"`.
    #[serde(default = "default_signature_header")]
    pub header: String,
    /// `hex` or `base64`. Default: `hex`.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// A prefix before the signature in the header, e.g. `"sha256="`; a header without it is
    /// refused. Default: none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A header carrying the signing time (unix seconds; values from 10^11 up are taken as
    /// milliseconds). Default: none (no timestamp, no replay window).
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Largest accepted distance between the timestamp and now, seconds. Default: 300.
    #[serde(default = "default_tolerance_secs")]
    pub tolerance_secs: u64,
}

/// A shared key sent verbatim in a header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// The header carrying the key, e.g. `"X-Api-Key"` or `"Authorization"`.
    pub header: String,
    /// The expected header value. Never logged.
    pub key: SecretString,
}

/// Why a request was not authenticated (answered 401). The messages name the header, never a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The signature, timestamp or key header is absent (or not text).
    #[error("missing header `{0}`")]
    MissingHeader(String),
    /// The signature header is not of the configured form.
    #[error("header `{header}`: {detail}")]
    MalformedSignature {
        /// The header.
        header: String,
        /// What is wrong.
        detail: String,
    },
    /// The signature does not match the body.
    #[error("the signature in `{0}` does not match the body")]
    Mismatch(String),
    /// The timestamp header is not a unix time.
    #[error("header `{0}` is not a unix timestamp")]
    BadTimestamp(String),
    /// The timestamp is outside the tolerance.
    #[error("the signing time is {age_secs} s away from now (tolerance {tolerance_secs} s)")]
    Stale {
        /// Distance from now, seconds.
        age_secs: i64,
        /// The configured tolerance.
        tolerance_secs: u64,
    },
    /// The API key does not match.
    #[error("wrong key in header `{0}`")]
    WrongKey(String),
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, AuthError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AuthError::MissingHeader(name.to_owned()))
}

fn check_header_name(what: &str, name: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("{what} `{name}` is not a valid HTTP header name"))
}

impl WebhookAuth {
    /// Checks the configuration: valid header names, a non-empty secret or key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            WebhookAuth::Hmac(h) => {
                check_header_name("hmac.header", &h.header)?;
                if let Some(t) = &h.timestamp_header {
                    check_header_name("hmac.timestamp_header", t)?;
                }
                if h.secret.expose_secret().is_empty() {
                    return Err("hmac.secret is empty".into());
                }
                Ok(())
            }
            WebhookAuth::ApiKey(k) => {
                check_header_name("api_key.header", &k.header)?;
                if k.key.expose_secret().is_empty() {
                    return Err("api_key.key is empty".into());
                }
                Ok(())
            }
        }
    }

    /// Verifies a request: its headers and raw body, at time `now`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        raw_body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        match self {
            WebhookAuth::Hmac(h) => h.verify(headers, raw_body, now),
            WebhookAuth::ApiKey(k) => k.verify(headers),
        }
    }
}

impl HmacAuth {
    fn mac(&self, timestamp: Option<&str>, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        if let Some(t) = timestamp {
            mac.update(t.as_bytes());
            mac.update(b".");
        }
        mac.update(body);
        mac
    }

    /// The signature header value a sender computes for `body` (with the prefix and encoding;
    /// `timestamp` is the timestamp header's text when one is configured).
    pub fn sign(&self, body: &[u8], timestamp: Option<&str>) -> String {
        let tag = self.mac(timestamp, body).finalize().into_bytes();
        let encoded = match self.encoding {
            SignatureEncoding::Hex => hex::encode(tag),
            SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag),
        };
        format!("{}{encoded}", self.prefix.as_deref().unwrap_or(""))
    }

    /// Verifies the signature (and the timestamp, when configured).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        raw_body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let value = header_text(headers, &self.header)?;
        let encoded = match &self.prefix {
            Some(p) => {
                value
                    .strip_prefix(p.as_str())
                    .ok_or_else(|| AuthError::MalformedSignature {
                        header: self.header.clone(),
                        detail: format!("does not start with `{p}`"),
                    })?
            }
            None => value,
        };
        let signature = match self.encoding {
            SignatureEncoding::Hex => hex::decode(encoded.trim()).ok(),
            SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok(),
        }
        .ok_or_else(|| AuthError::MalformedSignature {
            header: self.header.clone(),
            detail: format!(
                "not {}",
                match self.encoding {
                    SignatureEncoding::Hex => "hex",
                    SignatureEncoding::Base64 => "base64",
                }
            ),
        })?;
        let timestamp = match &self.timestamp_header {
            Some(h) => {
                let text = header_text(headers, h)?;
                let n: i64 = text
                    .parse()
                    .map_err(|_| AuthError::BadTimestamp(h.clone()))?;
                Some((text, n))
            }
            None => None,
        };
        self.mac(timestamp.map(|(t, _)| t), raw_body)
            .verify_slice(&signature)
            .map_err(|_| AuthError::Mismatch(self.header.clone()))?;
        if let Some((_, n)) = timestamp {
            let secs = if n.unsigned_abs() >= 100_000_000_000 {
                n / 1000
            } else {
                n
            };
            let age = now.timestamp().saturating_sub(secs).saturating_abs();
            if age.unsigned_abs() > self.tolerance_secs {
                return Err(AuthError::Stale {
                    age_secs: age,
                    tolerance_secs: self.tolerance_secs,
                });
            }
        }
        Ok(())
    }
}

impl ApiKeyAuth {
    /// Compares the header with the key in constant time.
    pub fn verify(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let got = headers
            .get(&self.header)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError::MissingHeader(self.header.clone()))?;
        if bool::from(got.ct_eq(self.key.expose_secret().as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::WrongKey(self.header.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac(encoding: SignatureEncoding, prefix: Option<&str>, ts: Option<&str>) -> HmacAuth {
        HmacAuth {
            secret: SecretString::from("s3cret"),
            header: "X-Signature".into(),
            encoding,
            prefix: prefix.map(str::to_owned),
            timestamp_header: ts.map(str::to_owned),
            tolerance_secs: 300,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256("s3cret", "hello"), computed independently.
        let a = hmac(SignatureEncoding::Hex, None, None);
        let sig = a.sign(b"hello", None);
        assert_eq!(sig.len(), 64);
        let mut m = HmacSha256::new_from_slice(b"s3cret").unwrap();
        m.update(b"hello");
        assert_eq!(sig, hex::encode(m.finalize().into_bytes()));
    }

    #[test]
    fn hex_base64_prefix_and_timestamps() {
        let now = Utc::now();
        let body = br#"{"id":"a"}"#;
        for auth in [
            hmac(SignatureEncoding::Hex, None, None),
            hmac(SignatureEncoding::Base64, None, None),
            hmac(SignatureEncoding::Hex, Some("sha256="), None),
        ] {
            let sig = auth.sign(body, None);
            assert!(auth
                .verify(&headers(&[("x-signature", &sig)]), body, now)
                .is_ok());
            assert!(matches!(
                auth.verify(&headers(&[("x-signature", &sig)]), b"{\"id\":\"b\"}", now),
                Err(AuthError::Mismatch(_))
            ));
            assert!(matches!(
                auth.verify(&headers(&[]), body, now),
                Err(AuthError::MissingHeader(_))
            ));
        }
        let p = hmac(SignatureEncoding::Hex, Some("sha256="), None);
        let bare = hmac(SignatureEncoding::Hex, None, None).sign(body, None);
        assert!(matches!(
            p.verify(&headers(&[("x-signature", &bare)]), body, now),
            Err(AuthError::MalformedSignature { .. })
        ));

        let t = hmac(SignatureEncoding::Hex, None, Some("X-Timestamp"));
        let ts = now.timestamp().to_string();
        let sig = t.sign(body, Some(&ts));
        assert!(t
            .verify(
                &headers(&[("x-signature", &sig), ("x-timestamp", &ts)]),
                body,
                now
            )
            .is_ok());
        // The timestamp is covered by the MAC.
        let other = (now.timestamp() - 1).to_string();
        assert!(matches!(
            t.verify(
                &headers(&[("x-signature", &sig), ("x-timestamp", &other)]),
                body,
                now
            ),
            Err(AuthError::Mismatch(_))
        ));
        // Stale.
        let old = (now.timestamp() - 301).to_string();
        let sig = t.sign(body, Some(&old));
        assert!(matches!(
            t.verify(
                &headers(&[("x-signature", &sig), ("x-timestamp", &old)]),
                body,
                now
            ),
            Err(AuthError::Stale { .. })
        ));
        // Milliseconds.
        let ms = now.timestamp_millis().to_string();
        let sig = t.sign(body, Some(&ms));
        assert!(t
            .verify(
                &headers(&[("x-signature", &sig), ("x-timestamp", &ms)]),
                body,
                now
            )
            .is_ok());
    }

    #[test]
    fn api_keys() {
        let k = ApiKeyAuth {
            header: "X-Api-Key".into(),
            key: SecretString::from("k-123"),
        };
        assert!(k.verify(&headers(&[("x-api-key", "k-123")])).is_ok());
        assert!(matches!(
            k.verify(&headers(&[("x-api-key", "k-124")])),
            Err(AuthError::WrongKey(_))
        ));
        assert!(matches!(
            k.verify(&headers(&[])),
            Err(AuthError::MissingHeader(_))
        ));
    }

    #[test]
    fn config_shape_and_redaction() {
        let a: WebhookAuth = serde_json::from_value(serde_json::json!({
            "hmac": {"secret": "topsecret", "encoding": "base64", "prefix": "sha256="}
        }))
        .unwrap();
        assert!(a.validate().is_ok());
        assert!(!format!("{a:?}").contains("topsecret"));
        let a: WebhookAuth = serde_json::from_value(serde_json::json!({
            "api_key": {"header": "bad header", "key": "k"}
        }))
        .unwrap();
        assert!(a.validate().unwrap_err().contains("bad header"));
        assert!(serde_json::from_value::<WebhookAuth>(serde_json::json!({
            "hmac": {"secret": "x", "algo": "sha1"}
        }))
        .is_err());
    }
}
