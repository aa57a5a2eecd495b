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
        let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?.as_bytes();
        let (scheme, presented) = split_scheme(value).ok_or(AuthError::Missing)?;
        if scheme.eq_ignore_ascii_case(b"bearer") {
            self.check_presented(presented)
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(presented).map_err(|_| AuthError::Invalid)?;
            let password =
                decoded.iter().position(|b| *b == b':').map(|i| &decoded[i + 1..]).ok_or(AuthError::Invalid)?;
            self.check_presented(password)
        } else {
            Err(AuthError::Missing)
        }
    }

    /// Checks a token presented as is (the path form).
    pub fn check_presented(&self, presented: &[u8]) -> Result<(), AuthError> {
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
