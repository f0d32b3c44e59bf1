//! Who may do what: join tokens on the requests that need them, and the
//! Origin and Host checks that keep other web pages out.
//!
//! - `/ws` takes the token as `?token=` or as a WebSocket subprotocol
//!   `voxloop.token.<JWT>` (offered beside `voxloop`, which the server
//!   selects; a browser cannot set headers on a WebSocket), `/whip` and the
//!   REST API as `Authorization: Bearer <JWT>`.
//! - Joining needs the `join` grant. A token bound to a session (`sid`)
//!   joins that id and no other; resuming an id needs a token bound to it,
//!   so nobody takes over a dropped user's id and the prompts waiting for it.
//! - Ending a session or prompting it needs `admin`, or the session's own
//!   token (bound to it, or of the identity that opened it); `prompt` may
//!   prompt any session; listing sessions and `/metrics` need `admin`.
//! - With no key configured auth is off (dev mode, loopback only), but the
//!   Origin and Host checks still apply.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

use super::AppState;
use crate::auth::{Claims, Grant, KeySet, TokenError, unix_now};
use crate::config::Config;
use crate::rtc::{ErrorCode, SignalError};

/// The subprotocol the server selects on `/ws`.
pub const WS_PROTOCOL: &str = "voxloop";
/// Prefix of the subprotocol that carries a token.
pub const WS_TOKEN_PREFIX: &str = "voxloop.token.";

/// The server's access policy.
pub struct Access {
    keys: KeySet,
    origins: Vec<String>,
    hosts: Vec<String>,
    loopback_only: bool,
}

/// The caller, as far as the policy is concerned.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: everyone may do everything.
    Open,
    Token(Claims),
}

impl Access {
    /// The policy of `config`, or why the server must not start with it.
    pub fn new(config: &Config) -> Result<Self, String> {
        let auth = &config.auth;
        let keys = KeySet::new(
            auth.keys
                .iter()
                .map(|k| (k.kid.as_str(), k.secret.as_str())),
        )?;
        let loopback = config.bind.ip().is_loopback();
        if keys.is_empty() && !loopback && !auth.insecure_no_auth {
            return Err(format!(
                "refusing to serve {} without authentication: set VOXLOOP_AUTH_KEY (or auth.keys), \
                 bind a loopback address, or pass --insecure-no-auth",
                config.bind
            ));
        }
        Ok(Self {
            keys,
            origins: auth.allowed_origins.clone(),
            hosts: auth.allowed_hosts.clone(),
            loopback_only: loopback,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Who is calling, from the token found in the request (if any).
    pub fn caller(&self, token: Option<&str>) -> Result<Caller, SignalError> {
        if !self.enabled() {
            return Ok(Caller::Open);
        }
        let token = token.ok_or_else(|| {
            SignalError::new(
                ErrorCode::NoToken,
                "this server needs a token (Authorization: Bearer, ?token= or the voxloop.token.<JWT> subprotocol)",
            )
        })?;
        match self.keys.verify(token, unix_now()) {
            Ok(c) => Ok(Caller::Token(c)),
            Err(e @ (TokenError::Expired(_) | TokenError::NotYetValid(_))) => {
                Err(SignalError::new(ErrorCode::TokenExpired, e.to_string()))
            }
            Err(e) => Err(SignalError::new(ErrorCode::BadToken, e.to_string())),
        }
    }

    /// The caller, who must hold `grant`.
    pub fn require(&self, token: Option<&str>, grant: Grant) -> Result<Caller, SignalError> {
        let caller = self.caller(token)?;
        if let Caller::Token(c) = &caller
            && !c.has(grant)
        {
            return Err(SignalError::new(
                ErrorCode::MissingGrant,
                format!(
                    "the token of {:?} lacks the {} grant",
                    c.sub,
                    grant.as_str()
                ),
            ));
        }
        Ok(caller)
    }

    /// `Host` must be one this server answers to. On a loopback bind with no
    /// list, only loopback names: a page on a rebound DNS name cannot reach
    /// a developer's open server.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), SignalError> {
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return Ok(()); // HTTP/1.0 without Host: nothing to rebind
        };
        let name = host_name(host);
        let ok = if !self.hosts.is_empty() {
            self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
        } else if self.loopback_only {
            is_loopback_name(name)
        } else {
            true
        };
        if ok {
            Ok(())
        } else {
            Err(SignalError::new(
                ErrorCode::HostNotAllowed,
                format!("this server does not answer to host {name:?} (auth.allowed_hosts)"),
            ))
        }
    }

    /// A browser page may open sessions only from the server's own origin or
    /// an allowed one. No `Origin` = not a browser page (a native client).
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), SignalError> {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Ok(());
        };
        let own = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
            });
        if own
            || self
                .origins
                .iter()
                .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            Ok(())
        } else {
            Err(SignalError::new(
                ErrorCode::OriginNotAllowed,
                format!("pages from {origin:?} may not use this server (auth.allowed_origins)"),
            ))
        }
    }
}

impl Caller {
    /// The session id to admit for a request that asked for `requested`.
    pub fn session_id(&self, requested: Option<&str>) -> Result<Option<String>, SignalError> {
        let Caller::Token(c) = self else {
            return Ok(requested.map(str::to_string));
        };
        match (c.sid.as_deref(), requested) {
            (Some(sid), None) => Ok(Some(sid.to_string())),
            (Some(sid), Some(r)) if sid == r => Ok(Some(sid.to_string())),
            (_, None) => Ok(None),
            (_, Some(_)) if c.has(Grant::Admin) => Ok(requested.map(str::to_string)),
            (Some(sid), Some(r)) => Err(SignalError::new(
                ErrorCode::WrongSession,
                format!("the token is bound to session {sid:?}, not {r:?}"),
            )),
            (None, Some(r)) => Err(SignalError::new(
                ErrorCode::WrongSession,
                format!(
                    "resuming session {r:?} needs a token bound to it (voxloop token --session)"
                ),
            )),
        }
    }

    /// Who opened a session (kept to recognise its own token later).
    pub fn identity(&self) -> Option<String> {
        match self {
            Caller::Open => None,
            Caller::Token(c) => Some(c.sub.clone()),
        }
    }

    /// May this caller end or prompt session `id`, opened by `owner`?
    pub fn may_act_on(&self, id: &str, owner: Option<&str>, grant: Grant) -> bool {
        match self {
            Caller::Open => true,
            Caller::Token(c) => {
                c.has(Grant::Admin)
                    || (grant == Grant::Prompt && c.has(Grant::Prompt))
                    || c.sid.as_deref() == Some(id)
                    || (owner.is_some() && owner == Some(c.sub.as_str()))
            }
        }
    }
}

/// `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A token offered as a WebSocket subprotocol.
pub fn ws_protocol_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(WS_TOKEN_PREFIX))
}

/// `example.org:8080` → `example.org`; `[::1]:8080` → `::1`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Middleware: the Host check, on every route.
pub async fn host_check(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match state.access.check_host(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => state.refuse(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn access(keys: bool, hosts: &[&str], origins: &[&str]) -> Access {
        let mut c = Config::default();
        if keys {
            c.auth.keys = vec![crate::config::AuthKey {
                kid: "k".into(),
                secret: "0123456789abcdef0123456789abcdef".into(),
            }];
        }
        c.auth.allowed_hosts = hosts.iter().map(|s| s.to_string()).collect();
        c.auth.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
        Access::new(&c).unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts_and_origins() {
        let open = access(false, &[], &["https://app.example.org"]);
        let cases = [
            ("127.0.0.1:8080", None, Ok(())),
            ("localhost:8080", Some("http://localhost:8080"), Ok(())),
            ("[::1]:8080", None, Ok(())),
            ("evil.example:8080", None, Err(ErrorCode::HostNotAllowed)),
            (
                "127.0.0.1:8080",
                Some("http://evil.example"),
                Err(ErrorCode::OriginNotAllowed),
            ),
            ("127.0.0.1:8080", Some("https://app.example.org"), Ok(())),
        ];
        for (i, (host, origin, want)) in cases.into_iter().enumerate() {
            let mut h = headers(&[(header::HOST, host)]);
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_static(o));
            }
            let got = open.check_host(&h).and_then(|()| open.check_origin(&h));
            assert_eq!(got.map_err(|e| e.code), want, "case {i}");
        }
        let listed = access(true, &["voice.example.org"], &[]);
        let h = headers(&[(header::HOST, "voice.example.org")]);
        assert!(listed.check_host(&h).is_ok());
        let h = headers(&[(header::HOST, "127.0.0.1:1")]);
        assert!(listed.check_host(&h).is_err());
    }

    #[test]
    fn non_loopback_needs_auth_or_the_insecure_flag() {
        let mut c = Config {
            bind: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(Access::new(&c).is_err());
        c.auth.insecure_no_auth = true;
        assert!(Access::new(&c).is_ok());
    }

    #[test]
    fn session_binding() {
        let claims = |sid: Option<&str>, grants: Vec<Grant>| {
            Caller::Token(Claims {
                sub: "ann".into(),
                sid: sid.map(str::to_string),
                grants,
                exp: u64::MAX / 2,
                nbf: None,
                iat: 0,
            })
        };
        let bound = claims(Some("ann-session-1"), vec![Grant::Join]);
        let unbound = claims(None, vec![Grant::Join]);
        let admin = claims(None, vec![Grant::Admin]);
        let code = |r: Result<Option<String>, SignalError>| r.map_err(|e| e.code);
        assert_eq!(
            code(bound.session_id(None)),
            Ok(Some("ann-session-1".into()))
        );
        assert_eq!(
            code(bound.session_id(Some("ann-session-1"))),
            Ok(Some("ann-session-1".into()))
        );
        assert_eq!(
            code(bound.session_id(Some("bob-session-1"))),
            Err(ErrorCode::WrongSession)
        );
        assert_eq!(code(unbound.session_id(None)), Ok(None));
        assert_eq!(
            code(unbound.session_id(Some("bob-session-1"))),
            Err(ErrorCode::WrongSession)
        );
        assert_eq!(
            code(admin.session_id(Some("bob-session-1"))),
            Ok(Some("bob-session-1".into()))
        );
        assert_eq!(
            code(Caller::Open.session_id(Some("x-session-1"))),
            Ok(Some("x-session-1".into()))
        );
        assert!(unbound.may_act_on("s1", Some("ann"), Grant::Join));
        assert!(!unbound.may_act_on("s1", Some("bob"), Grant::Join));
        assert!(!unbound.may_act_on("s1", None, Grant::Prompt));
        assert!(claims(None, vec![Grant::Prompt]).may_act_on("s1", None, Grant::Prompt));
        assert!(admin.may_act_on("s1", Some("bob"), Grant::Join));
    }

    #[test]
    fn tokens_in_headers() {
        let h = headers(&[(header::AUTHORIZATION, "Bearer abc.def.ghi")]);
        assert_eq!(bearer(&h), Some("abc.def.ghi"));
        let h = headers(&[(
            header::SEC_WEBSOCKET_PROTOCOL,
            "voxloop, voxloop.token.abc.def.ghi",
        )]);
        assert_eq!(ws_protocol_token(&h), Some("abc.def.ghi"));
    }
}
