//! TLS settings (the `[tls]` table and the `--tls-*` / `--redis-tls-*` flags), the gRPC
//! server's rustls configuration with optional client-certificate verification (mTLS), and
//! its reload: the files are polled every second and new connections get the new
//! certificate; open connections keep theirs.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::{info, warn};

/// The `[tls]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsTable {
    /// The server's certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; set, it requires one.
    pub client_ca_file: Option<PathBuf>,
    /// CA certificates (PEM) that Redis's certificate must chain to (`rediss://` URLs).
    pub redis_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to Redis.
    pub redis_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub redis_key_file: Option<PathBuf>,
}

/// TLS flags of `floodgate serve`; they override the `[tls]` table key by key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "FLOODGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "FLOODGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM) — mutual TLS.
    #[arg(long, env = "FLOODGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// CA certificates (PEM) for a rediss:// Redis [default: the system roots].
    #[arg(long, env = "FLOODGATE_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for Redis with mutual TLS; needs --redis-tls-key.
    #[arg(long, env = "FLOODGATE_REDIS_TLS_CERT")]
    pub redis_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --redis-tls-cert.
    #[arg(long, env = "FLOODGATE_REDIS_TLS_KEY")]
    pub redis_tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The table with these flags applied over it.
    pub fn over(&self, file: Option<&TlsTable>) -> TlsTable {
        let f = file.cloned().unwrap_or_default();
        TlsTable {
            cert_file: self.tls_cert.clone().or(f.cert_file),
            key_file: self.tls_key.clone().or(f.key_file),
            client_ca_file: self.tls_client_ca.clone().or(f.client_ca_file),
            redis_ca_file: self.redis_tls_ca.clone().or(f.redis_ca_file),
            redis_cert_file: self.redis_tls_cert.clone().or(f.redis_cert_file),
            redis_key_file: self.redis_tls_key.clone().or(f.redis_key_file),
        }
    }
}

/// The gRPC server's certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA of client certificates (mTLS), if required.
    pub client_ca: Option<PathBuf>,
}

/// Redis TLS files (used with `rediss://` URLs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// CA certificates; none means the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsTable {
    /// Checks which files go together; errors name the keys (and flags) to set.
    pub fn split(&self) -> anyhow::Result<(Option<ServerTls>, RedisTls)> {
        let server = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.client_ca_file.clone(),
            }),
            (None, None) if self.client_ca_file.is_some() => anyhow::bail!(
                "tls.client_ca_file (--tls-client-ca) needs TLS: set tls.cert_file and tls.key_file (--tls-cert, --tls-key)"
            ),
            (None, None) => None,
            (Some(_), None) => {
                anyhow::bail!("tls.cert_file (--tls-cert) needs tls.key_file (--tls-key)")
            }
            (None, Some(_)) => {
                anyhow::bail!("tls.key_file (--tls-key) needs tls.cert_file (--tls-cert)")
            }
        };
        let client = match (&self.redis_cert_file, &self.redis_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => anyhow::bail!(
                "tls.redis_cert_file and tls.redis_key_file (--redis-tls-cert, --redis-tls-key) go together"
            ),
        };
        Ok((
            server,
            RedisTls {
                ca: self.redis_ca_file.clone(),
                client,
            },
        ))
    }
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// The certificates of a PEM file; an error names the file when it holds none.
pub fn certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the {what} {} is not valid PEM", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the {what} {} holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\")",
        path.display()
    );
    Ok(certs)
}

/// The private key of a PEM file.
pub fn key(path: &Path, what: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "the {what} {} holds no private key (expected PEM PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// The crypto provider of every rustls configuration in this process.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls server configuration from the files (HTTP/2 only).
pub fn server_config(tls: &ServerTls) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = certs(&tls.cert, "TLS certificate file")?;
    let key = key(&tls.key, "TLS key file")?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "TLS client CA file")? {
                roots.add(c).with_context(|| {
                    format!(
                        "the TLS client CA file {} holds an unusable certificate",
                        ca.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .with_context(|| format!("the TLS client CA file {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "the TLS key file {} does not match the certificate {}",
            tls.key.display(),
            tls.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The live server configuration, replaced when the files change.
#[derive(Debug, Clone)]
pub struct Reloading {
    current: Arc<ArcSwap<ServerConfig>>,
}

impl Reloading {
    /// Loads the files now (failing with the file's name) and polls them every second.
    pub fn start(tls: ServerTls) -> anyhow::Result<Self> {
        let current = Arc::new(ArcSwap::new(server_config(&tls)?));
        let this = Self { current };
        let swap = this.current.clone();
        tokio::spawn(async move {
            let mut seen = stamps(&tls);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = stamps(&tls);
                if now == seen {
                    continue;
                }
                // A cert and key written one after the other may not match for a moment:
                // keep the old configuration and try again on the next tick.
                match server_config(&tls) {
                    Ok(c) => {
                        swap.store(c);
                        seen = now;
                        metrics::counter!("floodgate_tls_reloads_total", "result" => "ok")
                            .increment(1);
                        info!(cert = %tls.cert.display(), "TLS certificate reloaded; new connections use it");
                    }
                    Err(e) => {
                        metrics::counter!("floodgate_tls_reloads_total", "result" => "error")
                            .increment(1);
                        warn!(
                            error = format!("{e:#}"),
                            "TLS files changed but cannot be used; still serving the previous certificate"
                        );
                    }
                }
            }
        });
        Ok(this)
    }

    /// The TLS handshake of one connection with the current configuration.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        TlsAcceptor::from(self.current.load_full())
            .accept(tcp)
            .await
    }
}

/// Modification time and length of each file (what a reload watches).
fn stamps(tls: &ServerTls) -> Vec<Option<(SystemTime, u64)>> {
    [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The certificates to reach Redis at `url` with: read from `tls`'s files for a `rediss…`
/// URL or when files are set (a plain URL with files is then refused by the store, naming
/// the mismatch); `None` otherwise.
pub fn redis_certificates_for(
    url: &str,
    tls: &RedisTls,
) -> anyhow::Result<Option<redis::TlsCertificates>> {
    if url.starts_with("rediss") || *tls != RedisTls::default() {
        Ok(Some(redis_certificates(tls)?))
    } else {
        Ok(None)
    }
}

/// Redis TLS certificates for redis-rs, read from the files (errors name the file).
pub fn redis_certificates(tls: &RedisTls) -> anyhow::Result<redis::TlsCertificates> {
    // redis-rs builds its rustls configuration with the process default provider.
    provider();
    let root_cert = tls
        .ca
        .as_deref()
        .map(|p| {
            certs(p, "Redis TLS CA file")?;
            read(p, "Redis TLS CA file")
        })
        .transpose()?;
    let client_tls = tls
        .client
        .as_ref()
        .map(|(c, k)| -> anyhow::Result<_> {
            certs(c, "Redis TLS certificate file")?;
            key(k, "Redis TLS key file")?;
            Ok(redis::ClientTlsConfig {
                client_cert: read(c, "Redis TLS certificate file")?,
                client_key: read(k, "Redis TLS key file")?,
            })
        })
        .transpose()?;
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let tls = ServerTls {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        };
        let e = format!("{:#}", server_config(&tls).unwrap_err());
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn files_go_together() {
        let t = TlsTable {
            cert_file: Some("c".into()),
            ..Default::default()
        };
        assert!(t.split().unwrap_err().to_string().contains("--tls-key"));
        let t = TlsTable {
            client_ca_file: Some("ca".into()),
            ..Default::default()
        };
        assert!(t.split().unwrap_err().to_string().contains("tls.cert_file"));
    }

    #[test]
    fn generated_certificate_loads_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let tls = ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(cert.clone()),
        };
        server_config(&tls).unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = format!("{:#}", server_config(&tls).unwrap_err());
        assert!(e.contains("key.pem") && e.contains("no private key"), "{e}");
    }
}
