//! A Redis for tests, obtained in this order:
//! 1. `FLOODGATE_TEST_REDIS_URL` when set (shared: tests isolate themselves by namespace);
//! 2. a private `redis-server` started on a free port, killed when dropped;
//! 3. a testcontainers `redis:7` container when a Docker engine answers;
//! 4. otherwise a panic naming what to install.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use testcontainers::{ContainerAsync, GenericImage, core::IntoContainerPort, runners::AsyncRunner};

/// A Redis that lives as long as this value.
pub struct TestRedis {
    /// `redis://127.0.0.1:PORT`.
    url: String,
    /// The private server, when we started one.
    child: Option<Child>,
    /// Its port.
    port: Option<u16>,
    /// Its working directory.
    dir: Option<tempfile::TempDir>,
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

fn spawn_redis_server(port: u16, dir: &Path) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--protected-mode", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
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
                child: None,
                port: None,
                dir: None,
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
                child: None,
                port: Some(port),
                dir: None,
                _container: Some(container),
            };
        }
        panic!(
            "no Redis for the tests: set FLOODGATE_TEST_REDIS_URL, or install redis-server \
             (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), \
             or run a Docker engine so testcontainers can start redis:7"
        );
    }

    /// Always a private `redis-server` process (for tests that stop or restart it).
    pub fn private() -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temp dir for redis-server");
        for _ in 0..5 {
            let port = crate::free_port();
            let Ok(mut child) = spawn_redis_server(port, dir.path()) else {
                panic!("cannot run redis-server; install it (`apt-get install redis-server`)");
            };
            let url = format!("redis://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port race; try another
                }
                let ok = ::redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                    .and_then(|mut c| ::redis::cmd("PING").query::<String>(&mut c));
                if ok.is_ok() {
                    return Self {
                        url,
                        child: Some(child),
                        port: Some(port),
                        dir: Some(dir),
                        _container: None,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start on a free port after 5 tries");
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

    /// Kills our private server (it stays down until [`TestRedis::restart_empty`]).
    pub fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            panic!("stop needs a private redis-server (TestRedis::private)");
        };
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills our private server and starts a fresh, empty one on the same port.
    pub fn restart_empty(&mut self) {
        let (Some(child), Some(port), Some(dir)) =
            (self.child.as_mut(), self.port, self.dir.as_ref())
        else {
            panic!("restart_empty needs a private redis-server (TestRedis::private)");
        };
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_redis_server(port, dir.path()) {
                Ok(mut c) => {
                    std::thread::sleep(Duration::from_millis(50));
                    if let Ok(None) = c.try_wait() {
                        self.child = Some(c);
                        break;
                    }
                }
                Err(e) => panic!("cannot restart redis-server: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "redis-server could not rebind port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for_ping(&self.url, Duration::from_secs(5));
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
