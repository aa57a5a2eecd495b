//! What the operator is told about its Kafka brokers (flags, environment) and the librdkafka
//! configuration that follows from it: pure, no I/O, so every combination is unit-tested.
//!
//! librdkafka's names and defaults: <https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md>.

use std::fmt;
use std::path::PathBuf;

use rdkafka::config::ClientConfig;

/// How often librdkafka reports its brokers' states (its statistics), in milliseconds: how soon
/// `zeroflow_source_connected{source="kafka"}` follows a broker going away or coming back.
pub const STATISTICS_INTERVAL_MS: u32 = 2000;

/// The topics to consume and how.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,...` (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group whose committed offsets this operator resumes from.
    pub group_id: String,
    /// TLS to the brokers; `None`: plaintext.
    pub tls: Option<KafkaTls>,
    /// SASL authentication; `None`: none.
    pub sasl: Option<KafkaSasl>,
}

/// TLS to the brokers (librdkafka's `ssl.*`, OpenSSL underneath). The broker's certificate is
/// verified against the CA and its host name (or IP address) checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// PEM file of the CAs that sign the brokers' certificates; `None`: the system's CAs.
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate and its private key, for brokers that require one
    /// (`ssl.client.auth=required`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// SASL mechanisms the operator offers (librdkafka's `sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// `PLAIN`: the password itself is sent, so only over TLS in production.
    #[value(name = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka and Kafka use.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials. The password never appears in `Debug` output.
#[derive(Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl KafkaSettings {
    /// librdkafka's `security.protocol` for these settings.
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// librdkafka's configuration.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            // Offsets are stored by hand after admission and committed in the background.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            // A new group starts at the oldest record the topic still holds: replaying is
            // harmless (duplicates), skipping would lose objects.
            .set("auto.offset.reset", "earliest")
            // A killed leader's membership ends after this, and the next leader's join waits
            // for it; the broker's minimum (group.min.session.timeout.ms) is 6 s by default.
            .set("session.timeout.ms", "6000")
            // The brokers' states, read for `zeroflow_source_connected` (context.rs).
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string())
            .set("client.id", "zeroflow-operator")
            .set("security.protocol", self.security_protocol());
        if let Some(tls) = &self.tls {
            // Verify the broker's name against its certificate (librdkafka's default since 2.0,
            // set so that it stays so).
            config.set("ssl.endpoint.identification.algorithm", "https");
            if let Some(ca) = &tls.ca_file {
                config.set("ssl.ca.location", ca.display().to_string());
            }
            if let Some((cert, key)) = &tls.client_cert {
                config.set("ssl.certificate.location", cert.display().to_string());
                config.set("ssl.key.location", key.display().to_string());
            }
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> KafkaSettings {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["events".into()],
            group_id: "zf".into(),
            tls: None,
            sasl: None,
        }
    }

    #[test]
    fn offsets_are_stored_by_hand_and_a_new_group_starts_at_the_oldest_record() {
        let config = plain().client_config();
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(config.get("group.id"), Some("zf"));
        assert_eq!(config.get("statistics.interval.ms"), Some("2000"));
    }

    #[test]
    fn plaintext_without_tls_or_sasl() {
        let config = plain().client_config();
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("ssl.ca.location"), None);
        assert_eq!(config.get("sasl.mechanism"), None);
    }

    #[test]
    fn tls_with_a_ca_and_a_client_certificate() {
        let settings = KafkaSettings {
            tls: Some(KafkaTls {
                ca_file: Some("/etc/kafka/ca.crt".into()),
                client_cert: Some(("/etc/kafka/tls.crt".into(), "/etc/kafka/tls.key".into())),
            }),
            ..plain()
        };
        let config = settings.client_config();
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/kafka/ca.crt"));
        assert_eq!(config.get("ssl.certificate.location"), Some("/etc/kafka/tls.crt"));
        assert_eq!(config.get("ssl.key.location"), Some("/etc/kafka/tls.key"));
        assert_eq!(config.get("ssl.endpoint.identification.algorithm"), Some("https"));
    }

    #[test]
    fn tls_with_the_system_cas_sets_no_ca_location() {
        let settings = KafkaSettings { tls: Some(KafkaTls::default()), ..plain() };
        let config = settings.client_config();
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), None);
        assert_eq!(config.get("ssl.certificate.location"), None);
    }

    #[test]
    fn sasl_over_tls_and_without() {
        let sasl = KafkaSasl { mechanism: SaslMechanism::ScramSha512, username: "zf".into(), password: "pw".into() };
        let settings = KafkaSettings { tls: Some(KafkaTls::default()), sasl: Some(sasl.clone()), ..plain() };
        let config = settings.client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("zf"));
        assert_eq!(config.get("sasl.password"), Some("pw"));
        let settings = KafkaSettings { sasl: Some(KafkaSasl { mechanism: SaslMechanism::Plain, ..sasl }), ..plain() };
        let config = settings.client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(config.get("sasl.mechanism"), Some("PLAIN"));
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let sasl = KafkaSasl { mechanism: SaslMechanism::Plain, username: "zf".into(), password: "s3cret".into() };
        let settings = KafkaSettings { sasl: Some(sasl), ..plain() };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("zf"), "{shown}");
    }
}
