//! A mocked apiserver for tests of what the operator writes (kube-rs controller-rs style): a
//! `kube::Client` over a `tower_test` service whose requests the test answers one by one, so the
//! exact sequence of reads and writes, their field managers and their bodies are asserted
//! without a cluster. The e2e suite proves the same against a real apiserver.

use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// The test side of a mocked apiserver.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request the operator made.
pub struct Call {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

impl Call {
    /// The value of a query parameter, e.g. `fieldManager`.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.uri.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// Answers 200 with `body`.
    pub fn ok(self, body: Value) {
        self.reply(StatusCode::OK, body);
    }

    /// Answers 200 with what was sent (what an apply or a create returns, near enough).
    pub fn echo(self) {
        let body = self.body.clone();
        self.ok(body);
    }

    /// Answers with a Kubernetes `Status` error.
    pub fn fail(self, code: u16, reason: &str, message: &str) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": reason, "message": message, "code": code});
        self.reply(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), status);
    }

    fn reply(self, status: StatusCode, body: Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
        match response {
            Ok(response) => self.respond.send_response(response),
            Err(e) => panic!("building a mocked response: {e}"),
        }
    }
}

/// A client whose requests the returned [`ApiServer`] answers.
pub fn client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

impl ApiServer {
    /// The next request; panics when none comes within 10 s.
    pub async fn next(&mut self) -> Call {
        let next = tokio::time::timeout(Duration::from_secs(10), self.0.next_request()).await;
        let Ok(Some((request, respond))) = next else { panic!("the operator made no further request") };
        let (parts, body) = request.into_parts();
        let bytes = http_body_util::BodyExt::collect(body).await.map(|b| b.to_bytes()).unwrap_or_default();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Call { method: parts.method, uri: parts.uri.to_string(), body, respond }
    }

    /// The next request, which must be `method` on a path ending with `path_suffix`.
    pub async fn expect(&mut self, method: Method, path_suffix: &str) -> Call {
        let call = self.next().await;
        assert_eq!(call.method, method, "{} {}", call.method, call.uri);
        assert!(
            call.path().ends_with(path_suffix),
            "expected {method} ...{path_suffix}, got {} {}",
            call.method,
            call.uri
        );
        call
    }

    /// Asserts that no request comes within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(quiet, self.0.next_request()).await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}
