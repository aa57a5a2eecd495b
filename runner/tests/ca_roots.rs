//! The runner works in images without a CA bundle (scratch, distroless static, busybox): the
//! HTTP client falls back to the roots built into the binary instead of failing to start.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn without_system_ca_certificates_the_runner_uses_its_built_in_roots() {
    let scratch = std::env::temp_dir().join(format!("zf-runner-ca-{}", std::process::id()));
    std::fs::create_dir_all(scratch.join("certs")).expect("scratch dir");
    std::fs::write(scratch.join("empty.pem"), "").expect("empty bundle");
    // rustls-native-certs reads these instead of the system's paths: an image without certificates.
    let mut child = Command::new(env!("CARGO_BIN_EXE_zeroflow-runner"))
        .args(["run", "--work-api", "http://127.0.0.1:9", "--pipeline", "ns/p"])
        .arg("--token-file")
        .arg(scratch.join("no-token"))
        .arg("--work-dir")
        .arg(scratch.join("work"))
        .args(["--", "true"])
        .env("SSL_CERT_FILE", scratch.join("empty.pem"))
        .env("SSL_CERT_DIR", scratch.join("certs"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("runner starts");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    // Running means: past building its client, it tries to lease (and finds no token).
    while !log.iter().any(|l: &String| l.contains("lease request failed")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&scratch);
    let log = log.join("\n");
    assert!(log.contains("using the runner's built-in roots"), "{log}");
    assert!(log.contains("lease request failed"), "the runner kept going: {log}");
}
