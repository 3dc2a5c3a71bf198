//! One `redis-server` process the tests own: started on a given port in a given directory,
//! paused (SIGSTOP), resumed (SIGCONT), killed (SIGKILL), restarted with the same arguments,
//! and always resumed and killed when dropped (also while a test panics).
//!
//! Every start fails loudly, naming the Debian package to install, when a binary is missing.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Debian/Ubuntu package and Homebrew formula that provide `binary`.
fn package_for(binary: &str) -> &'static str {
    match binary {
        "redis-cli" => "redis-tools (`apt-get install redis-tools`; macOS: `brew install redis`)",
        _ => "redis-server (`apt-get install redis-server`; macOS: `brew install redis`)",
    }
}

/// Panics unless `binary --version` runs, naming what to install.
pub fn require(binary: &str) {
    let ok = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{binary}` is not on PATH; these tests start their own Redis processes: install {}",
        package_for(binary)
    );
}

/// Answers PING (or anything) within `timeout`? One synchronous attempt.
pub fn ping(port: u16, timeout: Duration) -> bool {
    query::<String>(port, timeout, &["PING"]).is_ok()
}

/// One command on a fresh synchronous connection to `127.0.0.1:port`, with `timeout` for
/// connecting, reading and writing.
pub fn query<T: ::redis::FromRedisValue>(
    port: u16,
    timeout: Duration,
    args: &[&str],
) -> ::redis::RedisResult<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let mut cmd = ::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn)
}

/// Blocks up to `within` for `check` to return `Ok`, then returns its value; panics with
/// the last error otherwise.
pub fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {within:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A `redis-server` (or `redis-server --sentinel`) process on `127.0.0.1:port`.
#[derive(Debug)]
pub struct RedisProcess {
    /// The process while it runs.
    child: Option<Child>,
    /// Its port.
    port: u16,
    /// Its working directory (kept by the owner).
    dir: PathBuf,
    /// Everything after `redis-server`, so a restart is identical.
    args: Vec<OsString>,
    /// Whether we stopped it with SIGSTOP.
    paused: bool,
}

impl RedisProcess {
    /// The arguments every test server gets: loopback only, no snapshots, no AOF, replicas
    /// synced without delay, port and dir.
    pub fn base_args(port: u16, dir: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            // A replica's first sync starts at once instead of after 5 s.
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push(dir.as_os_str().to_owned());
        args
    }

    /// Starts `redis-server <args>` and waits up to `within` for PING on `port`.
    /// `Err` when the process exited first (usually: someone else took the port), so the
    /// caller can retry on another port; panics when `redis-server` cannot run at all.
    pub fn start(
        port: u16,
        dir: &Path,
        args: Vec<OsString>,
        within: Duration,
    ) -> Result<Self, String> {
        let mut p = Self {
            child: None,
            port,
            dir: dir.to_owned(),
            args,
            paused: false,
        };
        p.spawn_and_wait(within)?;
        Ok(p)
    }

    fn spawn_and_wait(&mut self, within: Duration) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join(format!("redis-{}.log", self.port)))
            .map_err(|e| format!("cannot create a log file in {}: {e}", self.dir.display()))?;
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run redis-server ({e}); install {}",
                package_for("redis-server")
            ),
        };
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited at start ({status}): {}",
                    self.port,
                    self.log_tail()
                ));
            }
            if ping(self.port, Duration::from_millis(200)) {
                self.child = Some(child);
                self.paused = false;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {within:?}: {}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines the process logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("redis-{}.log", self.port)))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is stopped by [`RedisProcess::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn try_signal(&self, sig: libc::c_int) -> std::io::Result<()> {
        let Some(child) = &self.child else {
            return Err(std::io::Error::other("it is not running"));
        };
        let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn signal(&self, sig: libc::c_int, what: &str) {
        if let Err(e) = self.try_signal(sig) {
            panic!("cannot {what} redis-server on port {}: {e}", self.port);
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP, "pause");
        self.paused = true;
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT, "resume");
        self.paused = false;
    }

    /// Kills the process (SIGKILL) and reaps it. Does nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL also ends a stopped process
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Kills the process if it runs, then starts it again on the same port with the same
    /// directory and arguments, and waits for PING. Retries while the port is still taken.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait(Duration::from_secs(5)) {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot restart redis-server on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.try_signal(libc::SIGCONT);
        }
        self.kill();
    }
}
