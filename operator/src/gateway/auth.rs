//! Bearer-token authentication for notification senders.

use axum::http::{HeaderMap, header::AUTHORIZATION};
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
    /// No `Authorization: Bearer ...` header: answer 401 with a challenge.
    #[error("missing bearer token")]
    Missing,
    /// A token that is not ours: 403.
    #[error("invalid bearer token")]
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

    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?.as_bytes();
        let (scheme, presented) = split_scheme(value).ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(AuthError::Missing);
        }
        // Constant time in the content; only the length can leak, and the length of a random
        // token tells an attacker nothing useful.
        if bool::from(presented.ct_eq(&self.0)) { Ok(()) } else { Err(AuthError::Invalid) }
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

    #[test]
    fn accepts_only_the_token() {
        let token = BearerToken::new("s3cret").expect("token");
        assert_eq!(token.check(&with_auth("Bearer s3cret")), Ok(()));
        assert_eq!(token.check(&with_auth("bearer  s3cret ")), Ok(()));
        assert_eq!(token.check(&with_auth("Bearer s3cre")), Err(AuthError::Invalid));
        assert_eq!(token.check(&with_auth("Bearer s3cret2")), Err(AuthError::Invalid));
        assert_eq!(token.check(&with_auth("Basic czNjcmV0")), Err(AuthError::Missing));
        assert_eq!(token.check(&with_auth("s3cret")), Err(AuthError::Missing));
        assert_eq!(token.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(BearerToken::new("  ").err(), Some(EmptyToken));
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }
}
