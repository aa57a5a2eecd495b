//! Authentication of notification senders: one shared token, presented however the sender can.
//!
//! - `Authorization: Bearer <token>`: MinIO's `auth_token`, EventBridge API-key connections,
//!   anything that can set a header.
//! - `Authorization: Basic base64(<any user>:<token>)`: SNS, which can only send credentials
//!   from the userinfo of the subscription URL (`https://zeroflow:<token>@host/v1/events/s3`),
//!   and EventBridge's Basic connections.
//! - The token as the last path segment (`/v1/events/s3/t/<token>`): Ceph RGW's HTTP endpoint
//!   and other senders that cannot set any header. Only the URL carries it, so it is as secret
//!   as the header: the gateway never logs request paths, and the token is compared in constant
//!   time like the others.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::http::{HeaderMap, header::AUTHORIZATION};
use base64::Engine as _;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The shared secret senders present. Its `Debug` never shows it.
#[derive(Clone)]
pub struct BearerToken(Vec<u8>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No credentials (no `Authorization` header of a known scheme): answer 401 with the
    /// challenges, which is also how SNS learns it must send its Basic credentials.
    #[error(
        "missing credentials: send the gateway token as a Bearer token, as the password of Basic credentials, or in the path (/t/<token>)"
    )]
    Missing,
    /// Credentials that are not ours: 403.
    #[error("invalid credentials")]
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the gateway token must not be empty")]
pub struct EmptyToken;

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Result<Self, EmptyToken> {
        let token = token.into().trim().to_owned();
        if token.is_empty() { Err(EmptyToken) } else { Ok(Self(token.into_bytes())) }
    }

    /// Checks the `Authorization` header: Bearer with the token, or Basic with the token as
    /// the password (the user name is not checked).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        self.check_presented(&presented(headers)?)
    }

    /// Checks a token presented as is (the path form).
    pub fn check_presented(&self, presented: &[u8]) -> Result<(), AuthError> {
        // Constant time in the content; only the length can leak, and the length of a random
        // token tells an attacker nothing useful.
        if bool::from(presented.ct_eq(&self.0)) { Ok(()) } else { Err(AuthError::Invalid) }
    }
}

/// The token an `Authorization` header presents: a Bearer token, or the password of Basic
/// credentials. `Missing` without a header of a known scheme, `Invalid` for Basic credentials
/// that do not decode or have no password. A Bearer token is borrowed from the header.
pub fn presented(headers: &HeaderMap) -> Result<Cow<'_, [u8]>, AuthError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?.as_bytes();
    let (scheme, presented) = split_scheme(value).ok_or(AuthError::Missing)?;
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Ok(Cow::Borrowed(presented))
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(presented).map_err(|_| AuthError::Invalid)?;
        let colon = decoded.iter().position(|b| *b == b':').ok_or(AuthError::Invalid)?;
        Ok(Cow::Owned(decoded[colon + 1..].to_vec()))
    } else {
        Err(AuthError::Missing)
    }
}

/// Whose pipelines the presented token reaches: the operator-wide `token` every namespace
/// (and with `token` unset authentication is off: every namespace too), a namespace's sender
/// token (from `tokens`) only that namespace. `Invalid` for any other token.
pub fn scope_of(
    token: Option<&BearerToken>,
    tokens: &NamespaceTokens,
    presented: &[u8],
) -> Result<SenderScope, AuthError> {
    let Some(token) = token else { return Ok(SenderScope::All) };
    if token.check_presented(presented).is_ok() {
        return Ok(SenderScope::All);
    }
    tokens.namespace_of(presented).map(SenderScope::Namespace).ok_or(AuthError::Invalid)
}

/// Whose pipelines an authenticated sender may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderScope {
    /// The operator-wide token (or authentication turned off): every namespace.
    All,
    /// A namespace's own sender token: only that namespace's pipelines.
    Namespace(String),
}

impl SenderScope {
    /// The namespace admission is limited to, `None` for all.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            SenderScope::All => None,
            SenderScope::Namespace(ns) => Some(ns),
        }
    }
}

/// Name of the Secret a namespace puts its sender token in, under key [`SENDER_TOKEN_KEY`].
pub const SENDER_TOKEN_SECRET: &str = "zeroflow-sender-token";
pub const SENDER_TOKEN_KEY: &str = "token";

/// Each namespace's sender token (from its [`SENDER_TOKEN_SECRET`]), kept up to date by the
/// controller and read by the gateway. Cloning shares the same map. `Debug` shows no token.
#[derive(Clone, Default)]
pub struct NamespaceTokens(Arc<RwLock<HashMap<String, BearerToken>>>);

impl std::fmt::Debug for NamespaceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.read().unwrap_or_else(PoisonError::into_inner).len();
        write!(f, "NamespaceTokens({count} namespaces)")
    }
}

impl NamespaceTokens {
    /// Sets (or with `None` forgets) a namespace's token.
    pub fn set(&self, namespace: &str, token: Option<BearerToken>) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match token {
            Some(token) => map.insert(namespace.to_owned(), token),
            None => map.remove(namespace),
        };
    }

    /// Forgets the tokens of namespaces not in `namespaces` (their last pipeline is gone).
    pub fn keep_only(&self, namespaces: &std::collections::BTreeSet<String>) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).retain(|ns, _| namespaces.contains(ns));
    }

    /// The namespace whose token was presented. Every token is compared, each in constant time,
    /// so the answer's timing does not tell which namespace (if any) matched.
    pub fn namespace_of(&self, presented: &[u8]) -> Option<String> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for (namespace, token) in map.iter() {
            if token.check_presented(presented).is_ok() {
                found = Some(namespace.clone());
            }
        }
        found
    }
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    Some((scheme, rest.trim_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        h
    }

    fn basic(user_and_password: &str) -> HeaderMap {
        with_auth(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_and_password)))
    }

    #[test]
    fn accepts_only_the_token() {
        let token = BearerToken::new("s3cret").expect("token");
        assert_eq!(token.check(&with_auth("Bearer s3cret")), Ok(()));
        assert_eq!(token.check(&with_auth("bearer  s3cret ")), Ok(()));
        assert_eq!(token.check(&with_auth("Bearer s3cre")), Err(AuthError::Invalid));
        assert_eq!(token.check(&with_auth("Bearer s3cret2")), Err(AuthError::Invalid));
        assert_eq!(token.check(&with_auth("Digest s3cret")), Err(AuthError::Missing));
        assert_eq!(token.check(&with_auth("s3cret")), Err(AuthError::Missing));
        assert_eq!(token.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(BearerToken::new("  ").err(), Some(EmptyToken));
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }

    #[test]
    fn a_namespace_token_names_its_namespace_only() {
        let tokens = NamespaceTokens::default();
        tokens.set("team-a", BearerToken::new("a-secret").ok());
        tokens.set("team-b", BearerToken::new("b-secret").ok());
        assert_eq!(tokens.namespace_of(b"a-secret").as_deref(), Some("team-a"));
        assert_eq!(tokens.namespace_of(b"b-secret").as_deref(), Some("team-b"));
        assert_eq!(tokens.namespace_of(b"a-secre"), None);
        assert_eq!(tokens.namespace_of(b""), None);
        tokens.set("team-a", None);
        assert_eq!(tokens.namespace_of(b"a-secret"), None);
        assert_eq!(format!("{tokens:?}"), "NamespaceTokens(1 namespaces)");
        assert_eq!(presented(&basic("x:b-secret")).as_deref(), Ok(&b"b-secret"[..]));
        assert_eq!(presented(&with_auth("Bearer b-secret")).as_deref(), Ok(&b"b-secret"[..]));
    }

    #[test]
    fn basic_credentials_carry_the_token_as_password() {
        let token = BearerToken::new("s3cret").expect("token");
        assert_eq!(token.check(&basic("zeroflow:s3cret")), Ok(()));
        assert_eq!(token.check(&basic("anyone:s3cret")), Ok(()));
        assert_eq!(token.check(&basic(":s3cret")), Ok(()));
        assert_eq!(token.check(&basic("zeroflow:wrong")), Err(AuthError::Invalid));
        assert_eq!(token.check(&basic("s3cret")), Err(AuthError::Invalid), "no password");
        assert_eq!(token.check(&basic("zeroflow:s3cret:x")), Err(AuthError::Invalid));
        assert_eq!(token.check(&with_auth("Basic not-base64!")), Err(AuthError::Invalid));
        assert_eq!(token.check_presented(b"s3cret"), Ok(()));
        assert_eq!(token.check_presented(b"s3cre"), Err(AuthError::Invalid));
        assert_eq!(token.check_presented(b""), Err(AuthError::Invalid));
    }
}
