use proptest::prelude::*;
use serde_json::Value;

use super::testing::TestSigner;
use super::*;
use crate::events::EventKind;

const CONFIRMATION: &str = include_str!("../../../testdata/events/case15-sns-subscription-confirmation.json");
const NOTIFICATION: &str = include_str!("../../../testdata/events/case15-sns-notification.json");
const TEST_EVENT: &str = include_str!("../../../testdata/events/case15-s3-test-event.json");
const CERT_URL: &str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem";

fn signer() -> &'static TestSigner {
    static SIGNER: std::sync::OnceLock<TestSigner> = std::sync::OnceLock::new();
    SIGNER.get_or_init(TestSigner::new)
}

fn signed(body: &str, version: SignatureVersion) -> Message {
    let mut document: Value = serde_json::from_str(body).expect("json");
    signer().sign(&mut document, version, CERT_URL);
    serde_json::from_value(document).expect("message")
}

fn cert() -> SigningCert {
    SigningCert::from_pem(signer().cert_pem.as_bytes()).expect("certificate")
}

#[test]
fn case15_confirmation_and_its_string_to_sign() {
    let message = parse(CONFIRMATION.as_bytes()).expect("parses");
    assert_eq!(message.kind, MessageType::SubscriptionConfirmation);
    assert_eq!(message.topic_arn, "arn:aws:sns:eu-west-1:111122223333:in-bucket-events");
    assert_eq!(message.signature_version().ok(), Some(SignatureVersion::Sha1));
    let expected = format!(
        "Message\n{}\nMessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\nSubscribeURL\n{}\nTimestamp\n2026-01-10T10:00:00.000Z\nToken\n{}\nTopicArn\narn:aws:sns:eu-west-1:111122223333:in-bucket-events\nType\nSubscriptionConfirmation\n",
        message.message,
        message.subscribe_url.as_deref().unwrap_or_default(),
        message.token.as_deref().unwrap_or_default(),
    );
    assert_eq!(message.string_to_sign(), expected);
    assert!(message.check_header(MessageType::SubscriptionConfirmation).is_ok());
    assert!(matches!(message.check_header(MessageType::Notification), Err(SnsError::TypeMismatch { .. })));
}

#[test]
fn case15_notification_unwraps_the_s3_records() {
    let message = parse(NOTIFICATION.as_bytes()).expect("parses");
    assert_eq!(message.kind, MessageType::Notification);
    let to_sign = message.string_to_sign();
    assert!(to_sign.starts_with("Message\n{\"Records\""), "{to_sign}");
    assert!(
        to_sign.ends_with(
            "\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\nSubject\nAmazon S3 Notification\nTimestamp\n2026-01-10T10:00:01.100Z\nTopicArn\narn:aws:sns:eu-west-1:111122223333:in-bucket-events\nType\nNotification\n"
        ),
        "{to_sign}"
    );
    let events = message.storage_events().expect("records");
    assert_eq!(events.len(), 1);
    // AWS form-escapes keys: `incoming/a+b.csv` is `incoming/a b.csv`.
    assert_eq!((events[0].kind.clone(), events[0].bucket.as_str()), (EventKind::Created, "in-bucket"));
    assert_eq!(events[0].key, "incoming/a b.csv");
    assert_eq!(events[0].etag.as_deref(), Some("b1946ac92492d2347c6235b4d2611184"));
    // Without a Subject the field is left out of the string to sign, not left empty.
    let mut no_subject: Value = serde_json::from_str(NOTIFICATION).expect("json");
    no_subject.as_object_mut().expect("object").remove("Subject");
    let message: Message = serde_json::from_value(no_subject).expect("message");
    assert!(!message.string_to_sign().contains("Subject"));
}

#[test]
fn case15_test_event_has_no_records() {
    let mut document: Value = serde_json::from_str(NOTIFICATION).expect("json");
    document["Message"] = Value::from(TEST_EVENT);
    let message: Message = serde_json::from_value(document).expect("message");
    assert!(message.storage_events().expect("parses").is_empty());
}

#[test]
fn signatures_of_both_versions_verify_and_tampering_does_not() {
    for version in [SignatureVersion::Sha1, SignatureVersion::Sha256] {
        for body in [CONFIRMATION, NOTIFICATION] {
            let message = signed(body, version);
            assert!(cert().verify(&message).is_ok(), "{version:?}");
            let mut tampered = message.clone();
            tampered.message.push(' ');
            assert!(matches!(cert().verify(&tampered), Err(SnsError::BadSignature)));
            let mut other_topic = message.clone();
            other_topic.topic_arn.push('x');
            assert!(matches!(cert().verify(&other_topic), Err(SnsError::BadSignature)));
        }
    }
    // A signature made for version 1 does not pass as version 2.
    let mut message = signed(NOTIFICATION, SignatureVersion::Sha1);
    message.signature_version = "2".into();
    assert!(matches!(cert().verify(&message), Err(SnsError::BadSignature)));
    // Another key's certificate.
    let stranger = SigningCert::from_pem(TestSigner::new().cert_pem.as_bytes()).expect("certificate");
    assert!(matches!(stranger.verify(&signed(NOTIFICATION, SignatureVersion::Sha256)), Err(SnsError::BadSignature)));
}

#[test]
fn the_cases_example_signatures_are_refused() {
    for body in [CONFIRMATION, NOTIFICATION] {
        let message = parse(body.as_bytes()).expect("parses");
        let err = cert().verify(&message).expect_err("EXAMPLE== is no signature");
        assert!(err.is_authenticity(), "{err}");
    }
    let mut message = parse(NOTIFICATION.as_bytes()).expect("parses");
    message.signature_version = "3".into();
    assert!(matches!(cert().verify(&message), Err(SnsError::SignatureVersion(_))));
    message.signature_version = "1".into();
    message.signature = "not base64!".into();
    assert!(matches!(cert().verify(&message), Err(SnsError::SignatureEncoding)));
}

#[test]
fn certificates_must_be_x509() {
    assert!(matches!(SigningCert::from_pem(b"not a certificate"), Err(SnsError::Certificate(_))));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(SigningCert::from_pem(garbage.as_bytes()), Err(SnsError::Certificate(_))));
    // A PEM bundle: the first certificate is the signing one.
    let bundle = format!("{}{}", signer().cert_pem, signer().ca_pem);
    let message = signed(NOTIFICATION, SignatureVersion::Sha256);
    assert!(SigningCert::from_pem(bundle.as_bytes()).expect("bundle").verify(&message).is_ok());
}

#[test]
fn confirmations_need_their_url_and_token() {
    let mut document: Value = serde_json::from_str(CONFIRMATION).expect("json");
    document.as_object_mut().expect("object").remove("SubscribeURL");
    let err = parse(document.to_string().as_bytes()).expect_err("refused");
    assert!(matches!(err, SnsError::Missing { field: "SubscribeURL", .. }), "{err}");
    assert!(matches!(parse(b"{}"), Err(SnsError::Json(_))));
    assert!(matches!(parse(br#"{"Type":"Other"}"#), Err(SnsError::Json(_))));
}

#[test]
fn only_sns_hosts_over_https() {
    let hosts = SnsHosts::default();
    for good in [
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
        "https://SNS.US-EAST-1.amazonaws.com/",
        "https://sns.cn-north-1.amazonaws.com.cn/",
        "https://sns.us-gov-west-1.amazonaws.com:443/",
    ] {
        assert!(hosts.check("SubscribeURL", good).is_ok(), "{good}");
    }
    for bad in [
        "http://sns.eu-west-1.amazonaws.com/",
        "https://sns.eu-west-1.amazonaws.com.evil.example/",
        "https://evil.example/sns.eu-west-1.amazonaws.com/",
        "https://sns.amazonaws.com/",
        "https://sns..amazonaws.com/",
        "https://sns.eu.west.amazonaws.com/",
        "https://user:pw@sns.eu-west-1.amazonaws.com/",
        "https://xsns.eu-west-1.amazonaws.com/",
        "https://sns.eu-west-1.evilamazonaws.com/",
        "https://127.0.0.1/",
        "not a url",
    ] {
        let err = hosts.check("SubscribeURL", bad).expect_err(bad);
        assert!(err.is_authenticity() && err.to_string().contains("SubscribeURL"), "{err}");
    }
    let custom = SnsHosts::new(["sns-test.example.".to_owned()]);
    assert!(custom.check("SubscribeURL", "https://sns.local-1.sns-test.example/x").is_ok());
    assert!(custom.check("SubscribeURL", "https://sns.eu-west-1.amazonaws.com/").is_err());
}

#[test]
fn certificate_urls_name_a_pem_file() {
    let hosts = SnsHosts::default();
    let (_, name) = hosts.check_cert_url(CERT_URL).expect("trusted");
    assert_eq!(name, "SimpleNotificationService-0000000000000000000000.pem");
    for bad in [
        "https://sns.eu-west-1.amazonaws.com/",
        "https://sns.eu-west-1.amazonaws.com/cert.pem?x=1",
        "https://sns.eu-west-1.amazonaws.com/a/..%2F..%2Fetc%2Fpasswd.pem",
        "https://sns.eu-west-1.amazonaws.com/.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.crt",
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
    ] {
        assert!(hosts.check_cert_url(bad).is_err(), "{bad}");
    }
}

/// One signed notification for the property tests (signing in a debug build is slow).
fn signed_notification() -> String {
    static SIGNED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SIGNED
        .get_or_init(|| {
            let mut document: Value = serde_json::from_str(NOTIFICATION).expect("json");
            signer().sign(&mut document, SignatureVersion::Sha256, CERT_URL);
            document.to_string()
        })
        .clone()
}

proptest! {
    #[test]
    fn parsing_never_panics(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&body);
    }

    #[test]
    fn verifying_mutated_messages_never_panics_nor_passes(cut in 0..NOTIFICATION.len(), byte in any::<u8>()) {
        let original = signed_notification();
        let mut body = original.clone().into_bytes();
        let cut = cut.min(body.len() - 1);
        body[cut] = byte;
        if let Ok(message) = parse(&body) {
            let verified = cert().verify(&message).is_ok();
            let same = serde_json::from_slice::<Value>(&body).ok() == serde_json::from_str::<Value>(&original).ok();
            prop_assert!(!verified || same || message.string_to_sign() == parse(original.as_bytes()).expect("parses").string_to_sign());
        }
        let _ = SnsHosts::default().check("SubscribeURL", &String::from_utf8_lossy(&body));
    }
}
