//! Certificates made at test time (rcgen; no key is ever committed) and a private
//! `redis-server` that speaks only TLS.
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate as a PEM file.
    pub pem: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("pem", &self.pem).finish()
    }
}

/// A certificate and its key, as PEM text and files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Certificate file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Certificate PEM.
    pub cert_pem: String,
    /// Key PEM.
    pub key_pem: String,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("floodgate test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Self { issuer, pem }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, dir: &Path, name: &str) -> Leaf {
        self.leaf(dir, name, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A client certificate.
    pub fn client(&self, dir: &Path, name: &str) -> Leaf {
        self.leaf(dir, name, vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// A certificate for both ends, as Redis Cluster nodes need: each is a TLS client of
    /// the others' bus ports.
    pub fn node(&self, dir: &Path, name: &str) -> Leaf {
        self.leaf(
            dir,
            name,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn leaf(&self, dir: &Path, name: &str, usages: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&leaf.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&leaf.key, &leaf.key_pem).unwrap();
        leaf
    }
}

/// A private `redis-server` listening only on a TLS port; killed when dropped.
#[derive(Debug)]
pub struct TlsRedis {
    child: Child,
    /// `rediss://127.0.0.1:PORT`.
    pub url: String,
}

impl TlsRedis {
    /// Starts one with `server`'s certificate; `client_ca` set requires client
    /// certificates signed by it.
    pub fn start(dir: &Path, server: &Leaf, ca: &Ca, require_clients: bool) -> Self {
        Self::start_with(dir, server, ca, require_clients, &[], crate::free_port)
    }

    /// [`start`](Self::start) with more arguments, on a port from `port`.
    fn start_with(
        dir: &Path,
        server: &Leaf,
        ca: &Ca,
        require_clients: bool,
        extra: &[&str],
        port: impl Fn() -> u16,
    ) -> Self {
        for _ in 0..5 {
            let port = port();
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--tls-cert-file")
                .arg(&server.cert)
                .arg("--tls-key-file")
                .arg(&server.key)
                .arg("--tls-ca-cert-file")
                .arg(&ca.pem)
                .args([
                    "--tls-auth-clients",
                    if require_clients { "yes" } else { "no" },
                ])
                .args(extra)
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot run redis-server; install it (`apt-get install redis-server`)");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        url: format!("rediss://127.0.0.1:{port}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server with --tls-port did not start (is it built with TLS?)");
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of `n` primaries (no replicas) that speaks only TLS, to clients and on
/// its bus, each node with `server`'s certificate (one of [`Ca::node`]: both ends of TLS); created with `redis-cli --tls --cluster
/// create` and returned once every node says `cluster_state:ok`. Killed when dropped.
pub fn tls_cluster(dir: &Path, server: &Leaf, ca: &Ca, n: usize) -> Vec<TlsRedis> {
    crate::redis_proc::require("redis-cli");
    let mut nodes: Vec<TlsRedis> = Vec::with_capacity(n);
    for i in 0..n {
        let node_dir = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let taken: Vec<u16> = nodes.iter().map(TlsRedis::port).collect();
        nodes.push(TlsRedis::start_with(
            &node_dir,
            server,
            ca,
            false,
            &[
                &crate::redis_cluster::CLUSTER_NODE_ARGS[..],
                &["--tls-cluster", "yes"],
            ]
            .concat(),
            || crate::redis_cluster::cluster_port(&taken),
        ));
    }
    // Each redis-cli run within 30 s (`--cluster create` waits for the join forever).
    let cli = |args: &[String]| {
        let mut child = Command::new("redis-cli")
            .arg("--tls")
            .arg("--cacert")
            .arg(&ca.pem)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run redis-cli; install redis-tools");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("redis-cli").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("redis-cli");
                panic!(
                    "redis-cli --tls {args:?} did not finish within 30 s: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("redis-cli")
    };
    let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
    create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
    create.push("--cluster-yes".into());
    let out = cli(&create);
    assert!(
        out.status.success(),
        "redis-cli --tls --cluster create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &nodes {
        let info = [
            "-p".to_owned(),
            node.port().to_string(),
            "cluster".into(),
            "info".into(),
        ];
        loop {
            let out = cli(&info);
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "TLS cluster node {} never reached cluster_state:ok",
                node.port()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

impl TlsRedis {
    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }
}
