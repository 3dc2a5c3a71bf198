//! Real `floodgate serve` processes on ephemeral ports, stopped when dropped.
use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use floodgate_client::Client;

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Redis URL; `None` serves from memory.
    pub redis_url: Option<String>,
    /// TOML configuration written to a temp file and passed with `--config`.
    pub config: Option<String>,
    /// Store deadline; tests that count exactly use a generous one (default 5 s).
    pub store_timeout: Option<Duration>,
    /// More arguments for `floodgate serve`.
    pub extra_args: Vec<String>,
}

/// A running server process.
#[derive(Debug)]
pub struct TestServer {
    /// The process.
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// `http://127.0.0.1:PORT` of the HTTP side port (metrics, health).
    http_url: String,
    /// Everything the server logged so far.
    logs: Arc<Mutex<Vec<String>>>,
    /// Keeps the config file alive.
    _config: Option<tempfile::NamedTempFile>,
}

/// Path of the server binary built for these tests.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("FLOODGATE_TEST_BINARY") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; the bin is in target/<profile>.
    let exe = std::env::current_exe().expect("no current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("unexpected test layout");
    let bin = dir.join("floodgate-test-server");
    assert!(
        bin.exists(),
        "{} is missing; build it with `cargo build -p floodgate-tests` (nextest and cargo test do)",
        bin.display()
    );
    bin
}

impl TestServer {
    /// Starts a server and waits until it listens.
    pub fn start(opts: ServerOptions) -> Self {
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
        let timeout = opts.store_timeout.unwrap_or(Duration::from_secs(5));
        cmd.arg("--store-timeout")
            .arg(format!("{}ms", timeout.as_millis()));
        if let Some(url) = &opts.redis_url {
            cmd.args(["--redis", url]);
        }
        let config = opts.config.as_ref().map(|text| {
            let mut f = tempfile::NamedTempFile::new().expect("temp config file");
            f.write_all(text.as_bytes()).expect("write config");
            f
        });
        if let Some(f) = &config {
            cmd.arg("--config").arg(f.path());
        }
        cmd.args(&opts.extra_args);
        for var in [
            "FLOODGATE_LISTEN",
            "FLOODGATE_HTTP_LISTEN",
            "FLOODGATE_REDIS_URL",
            "FLOODGATE_CONFIG",
            "FLOODGATE_STORE_TIMEOUT",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("FLOODGATE_LOG", "info");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the floodgate test server");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for (grpc, marker) in [(true, "gRPC listening on "), (false, "HTTP listening on ")]
                {
                    if let Some(i) = line.find(marker) {
                        let addr = line[i + marker.len()..]
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send((grpc, addr));
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut grpc, mut http) = (None, None);
        let addr = loop {
            if let Ok((is_grpc, addr)) = rx.recv_timeout(Duration::from_millis(50)) {
                if is_grpc {
                    grpc = Some(addr)
                } else {
                    http = Some(addr)
                }
            }
            if let (Some(g), Some(h)) = (&grpc, &http) {
                break (g.clone(), h.clone());
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "floodgate exited with {status} before listening:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "floodgate did not listen within 30 s:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Self {
            child,
            url: format!("http://{}", addr.0),
            http_url: format!("http://{}", addr.1),
            logs,
            _config: config,
        }
    }

    /// A server on `redis_url` with a configuration.
    pub fn on_redis(redis_url: &str, config: &str) -> Self {
        Self::start(ServerOptions {
            redis_url: Some(redis_url.to_owned()),
            config: Some(config.to_owned()),
            ..Default::default()
        })
    }

    /// A server on the memory store with a configuration.
    pub fn in_memory(config: &str) -> Self {
        Self::start(ServerOptions {
            config: Some(config.to_owned()),
            ..Default::default()
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://127.0.0.1:PORT` of the HTTP side port (`/metrics`, `/healthz`, `/readyz`).
    pub fn http_url(&self) -> &str {
        &self.http_url
    }

    /// The configuration file the server was started with (rewrite it to test reloads).
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self._config.as_ref().map(|f| f.path())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client connected to this server.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url)
            .await
            .expect("cannot connect to the test server")
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit status.
    pub fn terminate(mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "floodgate did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
