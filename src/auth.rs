//! Join tokens: JWTs signed with HS256 (HMAC-SHA-256), verified against a
//! set of keys named by `kid` so keys can be rotated (sign with the new
//! key, keep verifying the old one until its tokens expire).
//!
//! Why not the `jsonwebtoken` crate: its current versions make every build
//! pick a crypto backend (aws-lc or a RustCrypto set with RSA and elliptic
//! curves), a large compile for the one algorithm used here. HS256 is a
//! base64url header and payload and one HMAC; `hmac` checks the tag in
//! constant time. Pure: no clock, no IO (the caller passes `now`).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Shortest accepted secret: HS256 wants a key as long as its output.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// Open a session (`/ws`, `POST /whip`), and end or prompt one's own.
    Join,
    /// Post prompts to any session (a backend that publishes questions).
    Prompt,
    /// Everything: list sessions, end or prompt any, read `/metrics`.
    Admin,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Join => "join",
            Grant::Prompt => "prompt",
            Grant::Admin => "admin",
        }
    }
}

/// The claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who holds it (a user id, a service name).
    pub sub: String,
    /// The session id it is bound to: only it may resume that id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Expiry and not-before, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub iat: u64,
}

impl Claims {
    pub fn has(&self, g: Grant) -> bool {
        self.grants.contains(&g) || self.grants.contains(&Grant::Admin)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// Why a token was refused; each has its own stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT ({0})")]
    Malformed(String),
    #[error("the token's algorithm {0:?} is not HS256")]
    Algorithm(String),
    #[error("the token names key {0:?}, which this server does not have")]
    UnknownKey(String),
    #[error("the token's signature does not match (wrong key, or altered)")]
    BadSignature,
    #[error("the token expired {0} s ago")]
    Expired(u64),
    #[error("the token is not valid for another {0} s")]
    NotYetValid(u64),
}

/// The signing keys, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: BTreeMap<String, Vec<u8>>,
    /// The key new tokens are signed with.
    current: Option<String>,
}

/// Accepted clock difference between the minter and this server, s.
const LEEWAY_S: u64 = 30;

impl KeySet {
    /// Keys in order; the first signs. Refuses short secrets and duplicate ids.
    pub fn new<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut set = KeySet::default();
        for (kid, secret) in keys {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "auth key {kid:?} is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                    secret.len()
                ));
            }
            if set
                .keys
                .insert(kid.to_string(), secret.as_bytes().to_vec())
                .is_some()
            {
                return Err(format!("auth key id {kid:?} is listed twice"));
            }
            set.current.get_or_insert_with(|| kid.to_string());
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn mac(secret: &[u8]) -> HmacSha256 {
        // HMAC takes a key of any length; this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length")
    }

    /// A signed token for `claims`, with the current key (or `kid`).
    pub fn mint(&self, claims: &Claims, kid: Option<&str>) -> Result<String, String> {
        let kid = kid
            .map(str::to_string)
            .or_else(|| self.current.clone())
            .ok_or("no auth key is configured (auth.keys or VOXLOOP_AUTH_KEY)")?;
        let secret = self
            .keys
            .get(&kid)
            .ok_or_else(|| format!("no auth key {kid:?}"))?;
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
            kid: Some(kid),
        };
        let signing = format!("{}.{}", encode(&header), encode(claims));
        let mut mac = Self::mac(secret);
        mac.update(signing.as_bytes());
        Ok(format!(
            "{signing}.{}",
            B64.encode(mac.finalize().into_bytes())
        ))
    }

    /// The claims of `token` if it is well formed, signed by one of our
    /// keys, and valid at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };
        let decode = |part: &str, what: &str| {
            B64.decode(part)
                .map_err(|_| TokenError::Malformed(format!("its {what} is not base64url")))
        };
        let header: Header = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm(header.alg));
        }
        let kid = header
            .kid
            .or_else(|| self.current.clone())
            .unwrap_or_default();
        let secret = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        let mut mac = Self::mac(secret);
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&decode(s, "signature")?)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&decode(p, "payload")?)
            .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        if now > claims.exp + LEEWAY_S {
            return Err(TokenError::Expired(now - claims.exp));
        }
        if let Some(nbf) = claims.nbf
            && nbf > now + LEEWAY_S
        {
            return Err(TokenError::NotYetValid(nbf - now));
        }
        Ok(claims)
    }
}

/// base64url of `v` as JSON.
fn encode<T: Serialize>(v: &T) -> String {
    B64.encode(serde_json::to_vec(v).unwrap_or_default())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-secret-that-is-long-enough-for-hs256!!";
    const B: &str = "another-secret-that-is-long-enough-too!!";

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "ann".into(),
            sid: Some("session-ann-1".into()),
            grants: vec![Grant::Join],
            exp,
            nbf: None,
            iat: 1000,
        }
    }

    #[test]
    fn round_trip_rotation_and_refusals() {
        let old = KeySet::new([("k1", A)]).unwrap();
        let rotated = KeySet::new([("k2", B), ("k1", A)]).unwrap();
        let t = old.mint(&claims(2000), None).unwrap();
        // A rotated server still accepts tokens of the old key.
        assert_eq!(rotated.verify(&t, 1500).unwrap(), claims(2000));
        let t2 = rotated.mint(&claims(2000), None).unwrap();
        let cases: Vec<(String, u64, Result<(), TokenError>)> = vec![
            (t.clone(), 1500, Ok(())),
            (
                t.clone(),
                2000 + LEEWAY_S + 5,
                Err(TokenError::Expired(LEEWAY_S + 5)),
            ),
            (t2.clone(), 1500, Err(TokenError::UnknownKey("k2".into()))),
            (
                "a.b".into(),
                1500,
                Err(TokenError::Malformed(
                    "expected three dot-separated parts".into(),
                )),
            ),
        ];
        for (i, (tok, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(old.verify(&tok, now).map(|_| ()), want, "case {i}");
        }
        // Same kid, other secret: a forged token.
        let forger = KeySet::new([("k1", B)]).unwrap();
        let forged = forger.mint(&claims(2000), None).unwrap();
        assert_eq!(old.verify(&forged, 1500), Err(TokenError::BadSignature));
        // Altered claims keep the signature of the original.
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut more = claims(2000);
        more.grants = vec![Grant::Admin];
        let payload = B64.encode(serde_json::to_vec(&more).unwrap());
        parts[1] = &payload;
        assert_eq!(
            old.verify(&parts.join("."), 1500),
            Err(TokenError::BadSignature)
        );
        // alg=none is refused before any key is looked at.
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(
            old.verify(&none, 1500),
            Err(TokenError::Algorithm("none".into()))
        );
        let mut early = claims(5000);
        early.nbf = Some(3000);
        let t3 = old.mint(&early, None).unwrap();
        assert!(matches!(
            old.verify(&t3, 1000),
            Err(TokenError::NotYetValid(_))
        ));
    }

    #[test]
    fn short_or_duplicate_keys_are_refused() {
        assert!(KeySet::new([("k", "short")]).is_err());
        assert!(KeySet::new([("k", A), ("k", B)]).is_err());
        assert!(KeySet::new(std::iter::empty()).unwrap().is_empty());
    }

    #[test]
    fn admin_implies_every_grant() {
        let mut c = claims(1);
        assert!(c.has(Grant::Join) && !c.has(Grant::Prompt));
        c.grants = vec![Grant::Admin];
        assert!(c.has(Grant::Join) && c.has(Grant::Prompt));
    }
}
