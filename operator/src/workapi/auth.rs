//! Who is calling: the bearer token of a worker pod's projected ServiceAccount token, verified by
//! the Kubernetes TokenReview API and cached briefly.
//!
//! [`TokenCache`] and [`identity_from_review`] are pure; [`TokenReviewVerifier`] is the I/O.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use thiserror::Error;

/// The audience workers' projected tokens are minted for.
pub const AUDIENCE: &str = "zeroflow";
/// How long a TokenReview answer is trusted; a deleted pod's token keeps working this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Refusals are remembered for less time, so a token that just became valid is not held up.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
pub const DEFAULT_CAPACITY: usize = 4096;
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The user-info key under which the apiserver names the pod a bound token belongs to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    /// The pod the token is bound to (projected tokens are); `None` for a token that is not.
    pub pod: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The token is not valid (expired, forged, wrong audience, deleted pod...): 401.
    #[error("token not authenticated")]
    Unauthenticated,
    /// The apiserver could not be asked: 503, and nothing is cached.
    #[error("token review unavailable: {0}")]
    Unavailable(String),
}

/// Checks a bearer token. Implementations must not log the token.
pub trait TokenVerifier: Send + Sync + 'static {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, VerifyError>>;
}

/// The token of an `Authorization: Bearer <token>` header; `None` when absent or another scheme.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The identity a TokenReview answer grants, if it authenticated the token for `audience`.
pub fn identity_from_review(status: Option<&TokenReviewStatus>, audience: &str) -> Result<Identity, VerifyError> {
    let status = status.ok_or(VerifyError::Unauthenticated)?;
    if status.authenticated != Some(true) {
        return Err(VerifyError::Unauthenticated);
    }
    // The apiserver answers with the audiences the token is valid for among those asked; an
    // authenticator that ignores audiences answers none, and such a token is not for us.
    if !status.audiences.as_ref().is_some_and(|a| a.iter().any(|x| x == audience)) {
        return Err(VerifyError::Unauthenticated);
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.clone())
        .filter(|u| !u.is_empty())
        .ok_or(VerifyError::Unauthenticated)?;
    let pod = status
        .user
        .as_ref()
        .and_then(|u| u.extra.as_ref())
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .and_then(|values| values.first())
        .filter(|name| !name.is_empty())
        .cloned();
    Ok(Identity { username, pod })
}

/// Verifies tokens with `authentication.k8s.io/v1` TokenReview. The operator's ServiceAccount
/// needs `create` on `tokenreviews`.
#[derive(Clone)]
pub struct TokenReviewVerifier {
    client: kube::Client,
    audience: String,
}

impl TokenReviewVerifier {
    pub fn new(client: kube::Client) -> Self {
        Self { client, audience: AUDIENCE.to_owned() }
    }
}

impl TokenVerifier for TokenReviewVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, VerifyError>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = TokenReview {
                spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: Some(vec![self.audience.clone()]) },
                ..TokenReview::default()
            };
            let answer = tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| VerifyError::Unavailable(format!("no answer within {REVIEW_TIMEOUT:?}")))?
                // The error names the request, never its body, so the token does not leak here.
                .map_err(|e| VerifyError::Unavailable(e.to_string()))?;
            identity_from_review(answer.status.as_ref(), &self.audience)
        })
    }
}

/// A keyed hash of a token: the cache never holds tokens, and without the process's random keys
/// nobody can make two tokens collide. Two independent 64-bit SipHashes give 128 bits.
type TokenDigest = (u64, u64);

#[derive(Debug, Clone)]
struct Cached {
    result: Result<Identity, VerifyError>,
    expires: Instant,
}

/// Recent verification results by token digest, bounded in size. Pure: the caller passes `now`.
#[derive(Debug)]
pub struct TokenCache {
    keys: (RandomState, RandomState),
    entries: HashMap<TokenDigest, Cached>,
    capacity: usize,
    ttl: Duration,
    negative_ttl: Duration,
}

impl TokenCache {
    pub fn new(capacity: usize, ttl: Duration, negative_ttl: Duration) -> Self {
        Self { keys: (RandomState::new(), RandomState::new()), entries: HashMap::new(), capacity, ttl, negative_ttl }
    }

    fn digest(&self, token: &str) -> TokenDigest {
        (self.keys.0.hash_one(token), self.keys.1.hash_one(token))
    }

    pub fn get(&mut self, token: &str, now: Instant) -> Option<Result<Identity, VerifyError>> {
        let digest = self.digest(token);
        match self.entries.get(&digest) {
            Some(c) if c.expires > now => Some(c.result.clone()),
            Some(_) => {
                self.entries.remove(&digest);
                None
            }
            None => None,
        }
    }

    /// Remembers a definite answer; `Unavailable` is not an answer about the token.
    pub fn put(&mut self, token: &str, result: &Result<Identity, VerifyError>, now: Instant) {
        let ttl = match result {
            Ok(_) => self.ttl,
            Err(VerifyError::Unauthenticated) => self.negative_ttl,
            Err(VerifyError::Unavailable(_)) => return,
        };
        if self.capacity == 0 {
            return;
        }
        let digest = self.digest(token);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&digest) {
            self.entries.retain(|_, c| c.expires > now);
            // Still full: drop the entry closest to expiry, the least valuable one.
            while self.entries.len() >= self.capacity {
                let Some(oldest) = self.entries.iter().min_by_key(|(_, c)| c.expires).map(|(k, _)| *k) else {
                    break;
                };
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(digest, Cached { result: result.clone(), expires: now + ttl });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Any verifier with a [`TokenCache`] in front, so steady heartbeats cost no apiserver calls.
pub struct CachingVerifier<V> {
    inner: V,
    cache: Mutex<TokenCache>,
}

impl<V: TokenVerifier> CachingVerifier<V> {
    pub fn new(inner: V) -> Self {
        Self::with_cache(inner, TokenCache::new(DEFAULT_CAPACITY, DEFAULT_TTL, DEFAULT_NEGATIVE_TTL))
    }

    pub fn with_cache(inner: V, cache: TokenCache) -> Self {
        Self { inner, cache: Mutex::new(cache) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V: TokenVerifier> TokenVerifier for CachingVerifier<V> {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, VerifyError>> {
        Box::pin(async move {
            if let Some(hit) = self.cache().get(token, Instant::now()) {
                return hit;
            }
            let result = self.inner.verify(token).await;
            self.cache().put(token, &result, Instant::now());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::HeaderValue;
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn ok(name: &str) -> Result<Identity, VerifyError> {
        Ok(Identity { username: name.into(), pod: None })
    }

    #[test]
    fn cache_answers_until_the_ttl_and_forgets_outages() {
        let t0 = Instant::now();
        let mut cache = TokenCache::new(10, Duration::from_secs(60), Duration::from_secs(10));
        cache.put("good", &ok("u"), t0);
        cache.put("bad", &Err(VerifyError::Unauthenticated), t0);
        cache.put("down", &Err(VerifyError::Unavailable("x".into())), t0);
        assert_eq!(cache.get("good", t0 + Duration::from_secs(59)), Some(ok("u")));
        assert_eq!(cache.get("bad", t0 + Duration::from_secs(9)), Some(Err(VerifyError::Unauthenticated)));
        assert_eq!(cache.get("bad", t0 + Duration::from_secs(10)), None);
        assert_eq!(cache.get("down", t0), None, "an outage says nothing about the token");
        assert_eq!(cache.get("good", t0 + Duration::from_secs(60)), None);
        assert!(cache.is_empty(), "expired entries are dropped when seen");
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_soonest_to_expire() {
        let t0 = Instant::now();
        let mut cache = TokenCache::new(3, Duration::from_secs(60), Duration::from_secs(10));
        cache.put("a", &ok("a"), t0);
        cache.put("b", &ok("b"), t0 + Duration::from_secs(1));
        cache.put("c", &ok("c"), t0 + Duration::from_secs(2));
        cache.put("d", &ok("d"), t0 + Duration::from_secs(3));
        assert_eq!(cache.len(), 3);
        let now = t0 + Duration::from_secs(4);
        assert_eq!(cache.get("a", now), None);
        assert_eq!(cache.get("d", now), Some(ok("d")));
        // Re-putting a present key never evicts another.
        cache.put("d", &ok("d2"), now);
        assert_eq!(cache.get("b", now), Some(ok("b")));
        assert_eq!(cache.get("d", now), Some(ok("d2")));
    }

    struct Counting(Arc<AtomicUsize>);

    impl TokenVerifier for Counting {
        fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, VerifyError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let result = if token == "good" { ok("u") } else { Err(VerifyError::Unauthenticated) };
            Box::pin(async move { result })
        }
    }

    #[tokio::test]
    async fn caching_verifier_asks_once_per_token() {
        let calls = Arc::new(AtomicUsize::new(0));
        let verifier = CachingVerifier::new(Counting(calls.clone()));
        for _ in 0..5 {
            assert_eq!(verifier.verify("good").await, ok("u"));
            assert_eq!(verifier.verify("nope").await, Err(VerifyError::Unauthenticated));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc.def"));
        assert_eq!(bearer_token(&h), Some("abc.def"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn reviews_must_authenticate_for_our_audience() {
        let status = |authenticated, audiences: &[&str], user: Option<&str>| TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            user: Some(UserInfo { username: user.map(str::to_owned), ..UserInfo::default() }),
            error: None,
        };
        let sa = "system:serviceaccount:ns:p-worker";
        assert_eq!(identity_from_review(Some(&status(true, &[AUDIENCE], Some(sa))), AUDIENCE), ok(sa));
        let refused = Err(VerifyError::Unauthenticated);
        assert_eq!(identity_from_review(Some(&status(false, &[AUDIENCE], Some(sa))), AUDIENCE), refused);
        assert_eq!(identity_from_review(Some(&status(true, &[], Some(sa))), AUDIENCE), refused);
        assert_eq!(identity_from_review(Some(&status(true, &["other"], Some(sa))), AUDIENCE), refused);
        assert_eq!(identity_from_review(Some(&status(true, &[AUDIENCE], None)), AUDIENCE), refused);
        assert_eq!(identity_from_review(None, AUDIENCE), refused);
    }

    #[test]
    fn a_bound_token_names_its_pod() {
        let mut status = TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![AUDIENCE.into()]),
            user: Some(UserInfo { username: Some("system:serviceaccount:ns:p-worker".into()), ..UserInfo::default() }),
            error: None,
        };
        let pod = |status: &TokenReviewStatus| identity_from_review(Some(status), AUDIENCE).map(|i| i.pod);
        assert_eq!(pod(&status), Ok(None));
        let extra = [(POD_NAME_EXTRA.to_owned(), vec!["p-worker-7d9f-abcde".to_owned()])].into();
        if let Some(user) = status.user.as_mut() {
            user.extra = Some(extra);
        }
        assert_eq!(pod(&status), Ok(Some("p-worker-7d9f-abcde".into())));
    }
}
