//! A real nats-server for a test: a free loopback port, a temporary JetStream store, killed and
//! cleaned on drop; it can be killed and restarted on the same port with the same store.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

/// `$NATS_SERVER_BIN`, else `nats-server` on PATH (found the way the demo finds it).
pub use prismwatch::tools::server::binary;

impl NatsServer {
    /// Starts `nats-server` (>= 2.10; .ci/run installs it).
    pub fn start() -> Self {
        let bin = binary().expect("nats-server >= 2.10 on PATH (.ci/run installs it)");
        Self::start_with(&bin).unwrap()
    }

    /// Starts a given binary; an error if it does not listen.
    pub fn start_with(bin: &Path) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut s = NatsServer {
            bin: bin.to_path_buf(),
            child: None,
            port,
            store: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        s.launch()?;
        Ok(s)
    }

    /// A port nobody listens on yet, for a server started later with [`NatsServer::start_on`].
    pub fn reserve() -> (u16, tempfile::TempDir) {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (port, tempfile::tempdir().unwrap())
    }

    /// Starts on a reserved port and store.
    pub fn start_on(port: u16, store: tempfile::TempDir) -> Self {
        let mut s = NatsServer {
            bin: binary().expect("nats-server on PATH"),
            child: None,
            port,
            store,
        };
        s.launch().unwrap();
        s
    }

    fn launch(&mut self) -> Result<(), String> {
        // The server writes `<executable>_<pid>.ports` here once it listens: proof that the
        // listener on the port is this child's. (A port picked free can be picked again by a
        // test running beside this one; that server's child would fail to bind, and a bare
        // connect would find the other's listener.)
        let ports_dir = self.store.path().join("ports");
        std::fs::create_dir_all(&ports_dir).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", self.bin.display()))?;
        let ports_file = format!("_{}.ports", child.id());
        let listening = || {
            std::fs::read_dir(&ports_dir).is_ok_and(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(&ports_file)))
            }) && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !listening() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("nats-server exited with {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("nats-server did not listen within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.launch().unwrap();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
