//! [`Tls`]: how the client verifies the server (a CA file or the system roots) and, for
//! mutual TLS, which certificate it presents. Used for `https://` endpoints.
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::Error;

/// TLS settings of a [`crate::Client`]. The default trusts the system's root certificates
/// and presents no client certificate.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// CA certificates (PEM) the server's certificate must chain to; none: system roots.
    ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM), for servers that require mTLS.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify in the server's certificate instead of the URL's host.
    domain: Option<String>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::InvalidTls {
        message: format!("cannot read the {what} {}: {e}", path.display()),
    })
}

impl Tls {
    /// Trusts only the CA certificates (PEM) given.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Trusts only the CA certificates (PEM) in `path`.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let pem = read(path.as_ref(), "CA file")?;
        Ok(self.ca_pem(pem))
    }

    /// Presents this certificate chain and key (PEM) to servers that require mTLS.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Presents the certificate and key in these files.
    pub fn identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let c = read(cert.as_ref(), "client certificate file")?;
        let k = read(key.as_ref(), "client key file")?;
        Ok(self.identity_pem(c, k))
    }

    /// Verifies `name` in the server's certificate instead of the URL's host.
    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    /// The tonic configuration.
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new();
        c = match &self.ca_pem {
            Some(pem) => c.ca_certificate(Certificate::from_pem(pem)),
            None => c.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        c
    }
}
