//! What the consumer tells a user about its brokers. librdkafka reconnects by itself and never
//! fails a `recv` because a broker is away; it reports through callbacks, which land here:
//!
//! - errors (a broker unreachable, TLS or SASL refused) are logged with what to check and
//!   counted in `zeroflow_source_errors_total{source="kafka",kind}`;
//! - its statistics (every `STATISTICS_INTERVAL_MS`) say whether any broker connection is up:
//!   `zeroflow_source_connected{source="kafka"}` is 1 or 0, and the change is logged;
//! - its own log lines go to `tracing` (target `librdkafka`), not to the `log` crate, which
//!   this operator does not collect.

use std::sync::atomic::{AtomicU8, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;
use tracing::{debug, error, info, warn};

use super::SOURCE;
use crate::sources::metrics::{SourceError, SourceMetrics};

/// What kind of trouble a librdkafka error is: the `kind` label, and what the log line says.
/// `reason` is librdkafka's text for the error.
pub fn classify(code: Option<RDKafkaErrorCode>, reason: &str) -> SourceError {
    use RDKafkaErrorCode as C;
    match code {
        // With TLS 1.3 the client's side of the handshake ends before the broker has checked
        // the client's certificate, so a broker that requires one refuses it only afterwards,
        // with a TLS alert on the next read: librdkafka reports that as a transport failure,
        // "Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate". An
        // OpenSSL error in the reason makes it a TLS failure, not an unreachable broker (a
        // closed or refused connection has none: librdkafka sets SSL_OP_IGNORE_UNEXPECTED_EOF,
        // so a broker going away reads as "Disconnected").
        Some(C::BrokerTransportFailure) if reason.contains("SSL routines") => SourceError::Tls,
        Some(
            C::Authentication | C::SaslAuthenticationFailed | C::TopicAuthorizationFailed | C::GroupAuthorizationFailed,
        ) => SourceError::Authentication,
        Some(C::SSL) => SourceError::Tls,
        Some(
            C::BrokerTransportFailure | C::AllBrokersDown | C::Resolve | C::BrokerNotAvailable | C::OperationTimedOut,
        ) => SourceError::Unreachable,
        _ => SourceError::Other,
    }
}

/// The part of librdkafka's statistics read here (the full shape: its STATISTICS.md).
#[derive(Debug, Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: std::collections::HashMap<String, BrokerStatistics>,
}

#[derive(Debug, Deserialize)]
struct BrokerStatistics {
    /// INIT, DOWN, CONNECT, SSL_HANDSHAKE, AUTH_LEGACY, UP, UPDATE, APIVERSION_QUERY,
    /// AUTH_HANDSHAKE, AUTH_REQ, TRY_CONNECT.
    state: String,
}

/// Whether librdkafka's statistics (JSON) show a broker connection that is up; `None` when
/// they cannot be read.
pub fn connected(statistics: &[u8]) -> Option<bool> {
    let statistics: Statistics = serde_json::from_slice(statistics).ok()?;
    Some(statistics.brokers.values().any(|b| b.state == "UP"))
}

/// Connection state as last reported: unknown until the first statistics.
const UNKNOWN: u8 = 2;

/// The consumer's librdkafka context.
pub struct Context {
    metrics: SourceMetrics,
    brokers: String,
    /// 0 disconnected, 1 connected, `UNKNOWN`.
    state: AtomicU8,
}

impl Context {
    pub fn new(metrics: SourceMetrics, brokers: String) -> Self {
        metrics.connected(SOURCE, false);
        Self { metrics, brokers, state: AtomicU8::new(UNKNOWN) }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let Some(up) = connected(statistics) else {
            debug!("unreadable librdkafka statistics");
            return;
        };
        self.metrics.connected(SOURCE, up);
        let before = self.state.swap(u8::from(up), Ordering::Relaxed);
        match (before, up) {
            (0, true) => info!(brokers = self.brokers, "Kafka brokers reachable again"),
            (UNKNOWN, true) => info!(brokers = self.brokers, "connected to the Kafka brokers"),
            (1 | UNKNOWN, false) => {
                warn!(brokers = self.brokers, "no connection to any Kafka broker; consuming resumes once one is back")
            }
            _ => {}
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let kind = classify(error.rdkafka_error_code(), reason);
        self.metrics.error(SOURCE, kind);
        match kind {
            SourceError::Authentication => error!(
                brokers = self.brokers,
                %error,
                reason,
                "Kafka refused the operator's credentials: check ZEROFLOW_KAFKA_SASL_USERNAME, \
                 ZEROFLOW_KAFKA_SASL_PASSWORD and --kafka-sasl-mechanism (and the user's ACLs); retrying"
            ),
            SourceError::Tls => error!(
                brokers = self.brokers,
                %error,
                reason,
                "TLS with a Kafka broker failed: check --kafka-ca-file (the CA of the brokers' \
                 certificates), that the certificates name the broker address, and \
                 --kafka-client-cert-file and --kafka-client-key-file (brokers that require a \
                 client certificate refuse a client without one, or with one their CA did not \
                 sign); retrying"
            ),
            SourceError::Unreachable => warn!(
                brokers = self.brokers,
                %error,
                reason,
                "cannot reach a Kafka broker; librdkafka keeps reconnecting"
            ),
            SourceError::Other => warn!(brokers = self.brokers, %error, reason, "Kafka client error"),
        }
    }
}

impl ConsumerContext for Context {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_what_a_user_must_check() {
        use RDKafkaErrorCode as C;
        assert_eq!(classify(Some(C::Authentication), ""), SourceError::Authentication);
        assert_eq!(classify(Some(C::SaslAuthenticationFailed), ""), SourceError::Authentication);
        assert_eq!(classify(Some(C::SSL), ""), SourceError::Tls);
        assert_eq!(classify(Some(C::BrokerTransportFailure), ""), SourceError::Unreachable);
        assert_eq!(classify(Some(C::AllBrokersDown), ""), SourceError::Unreachable);
        assert_eq!(classify(Some(C::Resolve), ""), SourceError::Unreachable);
        assert_eq!(classify(Some(C::UnknownTopicOrPartition), ""), SourceError::Other);
        assert_eq!(classify(None, ""), SourceError::Other);
    }

    #[test]
    fn a_client_certificate_refused_after_the_handshake_is_a_tls_error() {
        use RDKafkaErrorCode as C;
        // Reasons as librdkafka 2.12 (OpenSSL 3) gave them against the testbed's Kafka 4.1: its
        // SSL listener requiring a client certificate the operator did not have, then the
        // broker stopped.
        let refused = "ssl://127.0.0.1:29739/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 \
                       alert bad certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)";
        assert_eq!(classify(Some(C::BrokerTransportFailure), refused), SourceError::Tls);
        let gone = "127.0.0.1:28468/1: Connect to ipv4#127.0.0.1:28468 failed: Connection refused \
                    (after 0ms in state CONNECT)";
        assert_eq!(classify(Some(C::BrokerTransportFailure), gone), SourceError::Unreachable);
        assert_eq!(classify(Some(C::AllBrokersDown), "1/1 brokers are down"), SourceError::Unreachable);
    }

    #[test]
    fn statistics_say_connected_when_any_broker_is_up() {
        // Shapes from librdkafka 2.12's statistics: the bootstrap entry and a learned broker.
        let up = br#"{"name": "zf", "brokers": {
            "127.0.0.1:9092/bootstrap": {"name": "127.0.0.1:9092/bootstrap", "nodeid": -1, "state": "INIT"},
            "127.0.0.1:9092/1": {"name": "127.0.0.1:9092/1", "nodeid": 1, "state": "UP"}}}"#;
        assert_eq!(connected(up), Some(true));
        let down = br#"{"brokers": {
            "127.0.0.1:9092/1": {"nodeid": 1, "state": "TRY_CONNECT"},
            "127.0.0.1:9092/bootstrap": {"nodeid": -1, "state": "DOWN"}}}"#;
        assert_eq!(connected(down), Some(false));
        // Authenticating is not connected: a refused password never reaches UP.
        let auth = br#"{"brokers": {"b/bootstrap": {"nodeid": -1, "state": "AUTH_REQ"}}}"#;
        assert_eq!(connected(auth), Some(false));
        assert_eq!(connected(br#"{"brokers": {}}"#), Some(false));
        assert_eq!(connected(b"not json"), None);
    }
}
