//! The gateway's SNS flags (flattened into the operator's command line), and the settings
//! they make.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;
use zeroflow_core::events::sns::SnsHosts;

use super::sns::{CertificateSource, SnsSettings};

/// How the gateway treats Amazon SNS deliveries (`docs/sources/aws-sns.md`).
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Domain suffixes of SNS's endpoints: a message's SigningCertURL and SubscribeURL must be
    /// https URLs on `sns.<region>.<suffix>`, comma-separated.
    #[arg(
        long,
        env = "ZEROFLOW_SNS_HOST_SUFFIXES",
        value_delimiter = ',',
        default_value = "amazonaws.com,amazonaws.com.cn"
    )]
    pub sns_host_suffixes: Vec<String>,

    /// Read SNS signing certificates from this directory (by the file name of SigningCertURL,
    /// `SimpleNotificationService-<hex>.pem`) instead of fetching them: for clusters that
    /// cannot reach SNS.
    #[arg(long, env = "ZEROFLOW_SNS_CERTIFICATE_DIR", conflicts_with = "sns_certificate_url_prefix")]
    pub sns_certificate_dir: Option<PathBuf>,

    /// Fetch SNS signing certificates from `<prefix><file name>` instead of SigningCertURL: a
    /// mirror inside the cluster.
    #[arg(long, env = "ZEROFLOW_SNS_CERTIFICATE_URL_PREFIX")]
    pub sns_certificate_url_prefix: Option<Url>,

    /// Send requests for SNS URLs (certificates, subscription confirmations) to this base URL
    /// instead of their own host, keeping path and query: an egress proxy, or a test stand-in.
    #[arg(long, env = "ZEROFLOW_SNS_ENDPOINT")]
    pub sns_endpoint: Option<Url>,

    /// Confirm SNS subscriptions by visiting SubscribeURL once the message's signature is
    /// verified. Off, the gateway logs and raises a Warning Event with the command to run.
    #[arg(long, env = "ZEROFLOW_SNS_CONFIRM_SUBSCRIPTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub sns_confirm_subscriptions: bool,

    /// Seconds each SNS certificate fetch or confirmation may take.
    #[arg(long, env = "ZEROFLOW_SNS_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub sns_timeout_seconds: u64,
}

impl GatewayArgs {
    pub fn sns_settings(&self) -> SnsSettings {
        let certificates = match (&self.sns_certificate_dir, &self.sns_certificate_url_prefix) {
            (Some(dir), _) => CertificateSource::Directory(dir.clone()),
            (None, Some(prefix)) => CertificateSource::UrlPrefix(with_trailing_slash(prefix)),
            (None, None) => CertificateSource::Fetch,
        };
        SnsSettings {
            hosts: SnsHosts::new(self.sns_host_suffixes.iter().cloned()),
            certificates,
            endpoint: self.sns_endpoint.clone(),
            confirm: self.sns_confirm_subscriptions,
            timeout: Duration::from_secs(self.sns_timeout_seconds),
        }
    }
}

/// `Url::join` replaces the last segment of a base without a trailing slash.
fn with_trailing_slash(url: &Url) -> Url {
    let mut url = url.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    #[test]
    fn defaults_trust_aws_and_fetch() {
        let cli = Cli::try_parse_from(["x"]).expect("parses");
        let settings = cli.gateway.sns_settings();
        assert_eq!(settings.hosts, SnsHosts::default());
        assert_eq!(settings.certificates, CertificateSource::Fetch);
        assert!(settings.confirm && settings.endpoint.is_none());
        assert_eq!(settings.timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_mirror_prefix_keeps_its_last_segment() {
        let cli =
            Cli::try_parse_from(["x", "--sns-certificate-url-prefix", "http://mirror.local/sns"]).expect("parses");
        match cli.gateway.sns_settings().certificates {
            CertificateSource::UrlPrefix(prefix) => {
                assert_eq!(prefix.join("a.pem").expect("join").as_str(), "http://mirror.local/sns/a.pem");
            }
            other => panic!("{other:?}"),
        }
        let both =
            Cli::try_parse_from(["x", "--sns-certificate-dir", "/d", "--sns-certificate-url-prefix", "http://m/"]);
        assert!(both.is_err(), "one certificate source");
        let cli =
            Cli::try_parse_from(["x", "--sns-host-suffixes", "sns-test.example", "--sns-confirm-subscriptions=false"])
                .expect("parses");
        let settings = cli.gateway.sns_settings();
        assert!(settings.hosts.check("SubscribeURL", "https://sns.r-1.sns-test.example/").is_ok());
        assert!(!settings.confirm);
    }
}
