//! The API's guards against a real nats-server: RS256 and ES256 tokens from a JWKS file (read
//! again when it changes), TLS with a certificate replaced while serving, per-client rate
//! limits, the request time limit, CORS only for configured origins, and `/metrics` behind
//! credentials.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::channels::eventually;
use common::RunningApp;
use prismwatch::api::config::{ApiKey, Role};
use prismwatch::app::Component;
use prismwatch::config::secret::Secret;
use prismwatch::config::Config;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn key(dir: &Path, name: &str, role: Role) -> ApiKey {
    let p = dir.join(format!("{name}.key"));
    std::fs::write(&p, key_text(name)).unwrap();
    ApiKey {
        name: name.into(),
        role,
        key: Secret::File(p),
    }
}

fn key_text(name: &str) -> String {
    format!("{name}-key-0123456789abcdef")
}

struct App {
    _srv: common::NatsServer,
    app: Option<RunningApp>,
    listen: String,
    dir: tempfile::TempDir,
}

/// The app with the manager (unless `manager` is false), the API on a free port, keys for a
/// viewer and an operator, and `tweak` applied.
async fn start(manager: bool, tweak: impl FnOnce(&mut Config, &Path)) -> App {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (srv, mut cfg, _js) = common::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let routing = d.join("routing.yaml");
    std::fs::write(
        &routing,
        "route: {receiver: team}\nreceivers: [{name: team}]\n",
    )
    .unwrap();
    cfg.alerting.routing_file = routing;
    let listen = common::free_listen_addr();
    cfg.http.listen = listen.clone();
    cfg.api.keys = vec![
        key(d, "viewer", Role::Viewer),
        key(d, "ops", Role::Operator),
        key(d, "waiter", Role::Viewer),
    ];
    tweak(&mut cfg, d);
    let components = if manager {
        vec![Component::Manager]
    } else {
        vec![Component::Notify]
    };
    let app = RunningApp::start_with(cfg, common::test_rules(), components);
    App {
        _srv: srv,
        app: Some(app),
        listen,
        dir,
    }
}

impl App {
    async fn stop(mut self) {
        if let Some(a) = self.app.take() {
            a.stop().await.unwrap();
        }
    }
}

async fn get(client: &reqwest::Client, url: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut r = client.get(url).timeout(Duration::from_secs(10));
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    match r.send().await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                code,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// Waits (bounded) until `url` answers 200 to the viewer.
async fn ready(client: &reqwest::Client, url: &str) {
    eventually(&format!("{url} to answer"), 30, || async {
        get(client, url, Some(&key_text("viewer"))).await.0 == 200
    })
    .await;
}

fn token(
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    key: &jsonwebtoken::EncodingKey,
    sub: &str,
    role: &str,
) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = kid.map(str::to_string);
    let exp = prismwatch::tools::clock::now_ms() / 1000 + 300;
    jsonwebtoken::encode(&h, &json!({"sub": sub, "role": role, "exp": exp}), key).unwrap()
}

/// A fresh P-256 key: its signing key and its public JWK.
fn es256_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw(); // 0x04 || X || Y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    (enc, jwk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_from_a_jwks_file_that_is_reread_when_it_changes() {
    let rsa_jwks: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("jwt-rs256-test.jwks.json")).unwrap(),
    )
    .unwrap();
    let (ec1, ec1_jwk) = es256_key("ec-1");
    let jwks_file = std::sync::Arc::new(std::sync::Mutex::new(PathBuf::new()));
    let jf = jwks_file.clone();
    let rsa = rsa_jwks["keys"][0].clone();
    let app = start(true, move |cfg, d| {
        let f = d.join("jwks.json");
        std::fs::write(&f, json!({"keys": [rsa, ec1_jwk]}).to_string()).unwrap();
        cfg.api.jwt_jwks_file = Some(f.clone());
        cfg.api.jwt_issuer = Some("https://sso.example".into());
        *jf.lock().unwrap() = f;
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/status", app.listen);
    ready(&client, &url).await;
    let rs = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(fixture("jwt-rs256-test-key.pem")).unwrap(),
    )
    .unwrap();
    let with_iss = |alg, kid, key: &jsonwebtoken::EncodingKey, iss: &str| {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid);
        let exp = prismwatch::tools::clock::now_ms() / 1000 + 300;
        jsonwebtoken::encode(
            &h,
            &json!({"sub": "alice", "role": "viewer", "exp": exp, "iss": iss}),
            key,
        )
        .unwrap()
    };
    use jsonwebtoken::Algorithm::{ES256, RS256};
    let rs_tok = with_iss(RS256, "rsa-1".into(), &rs, "https://sso.example");
    let es_tok = with_iss(ES256, "ec-1".into(), &ec1, "https://sso.example");
    assert_eq!(get(&client, &url, Some(&rs_tok)).await.0, 200);
    assert_eq!(get(&client, &url, Some(&es_tok)).await.0, 200);
    // Wrong issuer, unknown kid, a key that is not in the set, HS256 with no secret configured.
    let (code, v) = get(
        &client,
        &url,
        Some(&with_iss(
            RS256,
            "rsa-1".into(),
            &rs,
            "https://evil.example",
        )),
    )
    .await;
    assert_eq!(code, 401, "{v}");
    let (code, v) = get(
        &client,
        &url,
        Some(&with_iss(RS256, "rsa-9".into(), &rs, "https://sso.example")),
    )
    .await;
    assert_eq!(code, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("rsa-9"),
        "{v}"
    );
    let (other, _) = es256_key("ec-1");
    let (code, v) = get(
        &client,
        &url,
        Some(&with_iss(
            ES256,
            "ec-1".into(),
            &other,
            "https://sso.example",
        )),
    )
    .await;
    assert_eq!(
        (code, v["error"]["message"].as_str()),
        (401, Some("token signature invalid"))
    );
    let hs = jsonwebtoken::EncodingKey::from_secret(b"some-secret-0123456789").unwrap();
    let (code, v) = get(
        &client,
        &url,
        Some(&token(
            jsonwebtoken::Algorithm::HS256,
            None,
            &hs,
            "x",
            "admin",
        )),
    )
    .await;
    assert_eq!(code, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("HS256"),
        "{v}"
    );
    // A viewer token on an operator route.
    let (code, _) = {
        let r = client
            .post(format!("http://{}/api/v1/silences", app.listen))
            .bearer_auth(&rs_tok)
            .json(&json!({"matchers": ["a=b"], "duration": "1h"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(code, 403);

    // Key rotation: ec-1 leaves the set, ec-2 comes in; the file is read again on its own.
    let (ec2, ec2_jwk) = es256_key("ec-2");
    let f = jwks_file.lock().unwrap().clone();
    std::fs::write(
        &f,
        json!({"keys": [rsa_jwks["keys"][0], ec2_jwk]}).to_string(),
    )
    .unwrap();
    let es2_tok = with_iss(ES256, "ec-2".into(), &ec2, "https://sso.example");
    eventually("the new JWKS to be read", 20, || async {
        get(&client, &url, Some(&es2_tok)).await.0 == 200
    })
    .await;
    assert_eq!(
        get(&client, &url, Some(&es_tok)).await.0,
        401,
        "the retired key is refused"
    );
    // A broken file keeps the keys in force.
    std::fs::write(&f, "{not json").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get(&client, &url, Some(&es2_tok)).await.0, 200);
    let _ = &app.dir;
    app.stop().await;
}

fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.pem())
}

fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_api_and_a_replaced_certificate_is_used_without_a_restart() {
    let pems = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let p = pems.clone();
    let app = start(true, move |cfg, d| {
        let (cert, key, pem) = self_signed(d, "first");
        *p.lock().unwrap() = pem;
        cfg.http.tls = Some(prismwatch::app::http::TlsFiles {
            cert_file: cert,
            key_file: key,
        });
    })
    .await;
    let first = pems.lock().unwrap().clone();
    let https = format!(
        "https://localhost:{}",
        app.listen.rsplit(':').next().unwrap()
    );
    let url = format!("{https}/api/v1/status");
    ready(&trusting(&first), &url).await;
    // Plain HTTP to the TLS port gets nothing useful.
    let (code, _) = get(
        &reqwest::Client::new(),
        &format!("http://{}/healthz", app.listen),
        None,
    )
    .await;
    assert_ne!(code, 200);
    // Renewal: new files in place (written aside, then renamed, as certificate tools do).
    let d = app.dir.path();
    let (cert2, key2, second) = self_signed(d, "second");
    std::fs::rename(&key2, d.join("first.key")).unwrap();
    std::fs::rename(&cert2, d.join("first.crt")).unwrap();
    eventually("the renewed certificate to be served", 20, || async {
        get(&trusting(&second), &url, Some(&key_text("viewer")))
            .await
            .0
            == 200
    })
    .await;
    let (code, v) = get(&trusting(&first), &url, Some(&key_text("viewer"))).await;
    assert_eq!(code, 0, "the old certificate is no longer served: {v}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_client_time_limit_cors_and_metrics_behind_credentials() {
    let app = start(false, |cfg, _| {
        cfg.api.rate_limit_per_second = 1;
        cfg.api.rate_limit_burst = 3;
        cfg.api.command_timeout_ms = 10_000;
        cfg.http.request_timeout_ms = 300;
        cfg.http.cors_allowed_origins = vec!["https://grafana.example".into()];
    })
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", app.listen);
    // Ready (health needs no credentials and is not rate limited).
    eventually("the listener", 30, || async {
        get(&client, &format!("{base}/healthz"), None).await.0 == 200
    })
    .await;
    // /metrics needs a viewer.
    assert_eq!(get(&client, &format!("{base}/metrics"), None).await.0, 401);
    let (code, _) = get(
        &client,
        &format!("{base}/metrics"),
        Some(&key_text("viewer")),
    )
    .await;
    assert_eq!(code, 200);

    // The viewer's burst of 3, then 429 with Retry-After; the operator is another client.
    let url = format!("{base}/api/v1/rules");
    eventually("the API to reach NATS", 30, || async {
        let (code, v) = get(&client, &url, Some(&key_text("waiter"))).await;
        assert!(code == 200 || code == 503 || code == 429, "{code} {v}");
        code == 200
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(get(&client, &url, Some(&key_text("viewer"))).await.0);
    }
    assert_eq!(&codes[..3], [200, 200, 200], "{codes:?}");
    let r = client
        .get(&url)
        .bearer_auth(key_text("viewer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("key:viewer"));
    assert_eq!(get(&client, &url, Some(&key_text("ops"))).await.0, 200);
    // Made-up credentials count against the caller's address, not as new clients.
    let mut bogus = Vec::new();
    for i in 0..5 {
        bogus.push(
            get(&client, &url, Some(&format!("made-up-key-{i}-0123456789")))
                .await
                .0,
        );
    }
    assert_eq!(&bogus[..3], [401, 401, 401]);
    assert_eq!(bogus[4], 429, "{bogus:?}");

    // Time limit: an ack waits for an alert manager that is not running; the request ends
    // at http.request_timeout_ms with a JSON error.
    let started = std::time::Instant::now();
    let r = client
        .post(format!("{base}/api/v1/alerts/some-alert/ack"))
        .bearer_auth(key_text("ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(started.elapsed() < Duration::from_secs(5));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "timeout");

    // CORS: the configured origin is allowed; another gets no CORS headers.
    let pre = |origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/api/v1/alerts"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let ok = pre("https://grafana.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://grafana.example"
    );
    let other = pre("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_configured_no_origin_is_allowed() {
    let app = start(false, |_, _| {}).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", app.listen);
    eventually("the listener", 30, || async {
        get(&client, &format!("{base}/healthz"), None).await.0 == 200
    })
    .await;
    let r = client
        .request(reqwest::Method::OPTIONS, format!("{base}/api/v1/alerts"))
        .header("Origin", "https://grafana.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client
        .get(format!("{base}/api/v1/rules"))
        .header("Origin", "https://grafana.example")
        .bearer_auth(key_text("viewer"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}
