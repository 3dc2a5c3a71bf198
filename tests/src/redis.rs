//! A Redis for tests, obtained in this order:
//! 1. `FLOODGATE_TEST_REDIS_URL` when set (shared: tests isolate themselves by namespace);
//! 2. a private `redis-server` started on a free port, killed when dropped;
//!    [`TestRedis::private`] always starts one, for tests that pause, kill or restart it;
//! 3. a testcontainers `redis:7` container when a Docker engine answers;
//! 4. otherwise a panic naming what to install.
use std::{
    ffi::OsString,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use testcontainers::{ContainerAsync, GenericImage, core::IntoContainerPort, runners::AsyncRunner};

use crate::redis_proc::{self, RedisProcess};

/// A Redis that lives as long as this value.
pub struct TestRedis {
    /// `redis://127.0.0.1:PORT`.
    url: String,
    /// The private server, when we started one (resumed and killed when dropped).
    process: Option<RedisProcess>,
    /// Its working directory (declared after `process`, so removed after it is killed).
    _dir: Option<tempfile::TempDir>,
    /// The host port of the container, when Docker provided it.
    container_port: Option<u16>,
    /// The container, when Docker provided it.
    _container: Option<ContainerAsync<GenericImage>>,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis").field("url", &self.url).finish()
    }
}

fn on_path(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Blocks until `url` answers PING, or panics after `within`.
pub fn wait_for_ping(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = ::redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c));
        if ok.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis at {url} did not answer PING within {within:?}: {ok:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl TestRedis {
    /// Obtains a Redis as the module doc says.
    pub async fn start() -> Self {
        if let Ok(url) = std::env::var("FLOODGATE_TEST_REDIS_URL")
            && !url.is_empty()
        {
            wait_for_ping(&url, Duration::from_secs(5));
            return Self {
                url,
                process: None,
                _dir: None,
                container_port: None,
                _container: None,
            };
        }
        if on_path("redis-server") {
            return Self::private();
        }
        if docker_answers() {
            let container = GenericImage::new("redis", "7")
                .with_exposed_port(6379.tcp())
                .start()
                .await
                .expect("testcontainers could not start redis:7");
            let port = container
                .get_host_port_ipv4(6379)
                .await
                .expect("no mapped port for the redis container");
            let url = format!("redis://127.0.0.1:{port}");
            wait_for_ping(&url, Duration::from_secs(20));
            return Self {
                url,
                process: None,
                _dir: None,
                container_port: Some(port),
                _container: Some(container),
            };
        }
        panic!(
            "no Redis for the tests: set FLOODGATE_TEST_REDIS_URL, or install redis-server \
             (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), \
             or run a Docker engine so testcontainers can start redis:7"
        );
    }

    /// Always a private `redis-server` process, whatever `FLOODGATE_TEST_REDIS_URL` says:
    /// the constructor for tests that pause, kill or restart Redis. Panics naming the
    /// package to install when `redis-server` is missing.
    pub fn private() -> Self {
        Self::private_with_args(&[])
    }

    /// [`TestRedis::private`] with more `redis-server` arguments (e.g. `["--appendonly",
    /// "yes"]` for data that survives [`TestRedis::restart`]); restarts reuse them.
    pub fn private_with_args(extra: &[&str]) -> Self {
        redis_proc::require("redis-server");
        let dir = tempfile::tempdir().expect("cannot create a temp dir for redis-server");
        let mut last = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let mut args = RedisProcess::base_args(port, dir.path());
            args.extend(extra.iter().map(OsString::from));
            match RedisProcess::start(port, dir.path(), args, Duration::from_secs(5)) {
                Ok(process) => {
                    return Self {
                        url: format!("redis://127.0.0.1:{port}"),
                        process: Some(process),
                        _dir: Some(dir),
                        container_port: None,
                        _container: None,
                    };
                }
                Err(e) => last = e, // usually a lost port race: try another port
            }
        }
        panic!("redis-server did not start on a free port after 5 tries: {last}");
    }

    /// The URL to give servers and clients.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A synchronous connection for test assertions.
    pub fn connection(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("cannot connect to the test Redis")
    }

    /// An async multiplexed connection for test assertions.
    pub async fn async_connection(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(self.url.as_str())
            .expect("bad test Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("cannot connect to the test Redis")
    }

    /// The private server's process, or a panic explaining that the test must use
    /// [`TestRedis::private`].
    fn process(&mut self, what: &str) -> &mut RedisProcess {
        match self.process.as_mut() {
            Some(p) => p,
            None => panic!(
                "TestRedis::{what} needs a process this test owns: start it with \
                 TestRedis::private() (FLOODGATE_TEST_REDIS_URL and containers cannot be \
                 paused or killed)"
            ),
        }
    }

    /// The port of the private server (also of a container's mapped port); panics for a
    /// `FLOODGATE_TEST_REDIS_URL` Redis, whose port is the URL's business.
    pub fn port(&self) -> u16 {
        match (&self.process, self.container_port) {
            (Some(p), _) => p.port(),
            (None, Some(port)) => port,
            (None, None) => panic!(
                "TestRedis::port: {} is not ours; use TestRedis::private()",
                self.url
            ),
        }
    }

    /// `127.0.0.1:<port>` of the private server, e.g. for [`crate::fault_proxy::FaultProxy`].
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The private server's process id while it runs; `None` when it is killed or not ours.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(RedisProcess::pid)
    }

    /// Freezes the private server (SIGSTOP): its connections stay open and it answers
    /// nothing until [`TestRedis::resume`] (or drop, which resumes it).
    pub fn pause(&mut self) {
        self.process("pause").pause();
    }

    /// Lets a paused private server run again (SIGCONT).
    pub fn resume(&mut self) {
        self.process("resume").resume();
    }

    /// Kills the private server (SIGKILL) and reaps it; it stays down until
    /// [`TestRedis::restart`].
    pub fn kill(&mut self) {
        self.process("kill").kill();
    }

    /// Starts the private server again (killing it first if it runs) on the same port, with
    /// the same directory and arguments, and waits for PING. Without persistence arguments
    /// it comes back empty.
    pub fn restart(&mut self) {
        self.process("restart").restart();
    }

    /// Kills our private server (the same as [`TestRedis::kill`]).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Kills our private server and starts a fresh, empty one on the same port (the same as
    /// [`TestRedis::restart`] for a server started without persistence).
    pub fn restart_empty(&mut self) {
        self.restart();
    }
}
