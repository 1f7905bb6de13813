//! TLS for `https://` and `wss://` hosts, over rustls with the ring provider.
//!
//! A link uses TLS when the host string of the node that accepts it starts with
//! `https://` or `wss://`: the dialer wraps its TCP stream in TLS before the WebSocket
//! upgrade, and the acceptor serves TLS on its listener and on
//! [`Manager::serve_socket`](super::Manager::serve_socket). Frames carry no CRC when both
//! host strings are TLS hosts (`PROTOCOL.md` §1.3), whatever the transport.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::runtime::BoxIo;

/// How a node speaks TLS: the client side (which server certificates it trusts) for the
/// links it dials, the server side (its certificate and key) for the links it accepts.
///
/// Set with [`ManagerBuilder::tls`](super::ManagerBuilder::tls). Cheap to clone.
///
/// ```no_run
/// # fn demo(rt: std::sync::Arc<dyn grid_core::driver::Runtime>) -> Result<(), Box<dyn std::error::Error>> {
/// use grid_core::driver::{Manager, TlsConfig};
///
/// // This node's certificate chain and key, and the CA that signed every node's.
/// let tls = TlsConfig::from_pem_files("node.crt", "node.key", "ca.crt")?;
/// let hosts = ["https://10.0.0.1:9000", "https://10.0.0.2:9000"];
/// let manager = Manager::builder(hosts[0], &hosts).tls(tls).start(rt)?;
/// # let _ = manager; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

/// Which PEM input a [`TlsError`] is about.
const CHAIN: &str = "certificate chain";
const KEY: &str = "private key";
const ROOTS: &str = "CA roots";

/// A TLS configuration could not be built from PEM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The input is not well-formed PEM.
    #[error("{what}: bad PEM: {source}")]
    Pem {
        /// The input: "certificate chain", "private key" or "CA roots".
        what: &'static str,
        /// The parser's reason.
        source: pem::Error,
    },
    /// The input holds no section of the kind needed.
    #[error("{what}: no {wanted} found in the PEM")]
    Missing {
        /// The input: "certificate chain", "private key" or "CA roots".
        what: &'static str,
        /// The kind of section needed.
        wanted: &'static str,
    },
    /// A CA certificate cannot be a trust anchor (it does not parse as X.509).
    #[error("CA roots: certificate {index} cannot be a trust anchor: {reason}")]
    BadRoot {
        /// Its position in the PEM, counting from 1.
        index: usize,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate chain and key (for example, a key that does not
    /// match the leaf certificate).
    #[error("{what}: {source}")]
    Rejected {
        /// The input: "private key" or "crypto provider".
        what: &'static str,
        /// rustls's reason.
        source: rustls::Error,
    },
}

impl TlsConfig {
    /// Uses the given rustls configurations: `client` for links this node dials (it
    /// decides which server certificates are trusted), `server` for links it accepts.
    ///
    /// The configurations must have a crypto provider (build them with
    /// `builder_with_provider`, or install a process-wide default provider first).
    pub fn new(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig { client, server }
    }

    /// Builds both sides from PEM: this node's certificate chain (leaf first) and private
    /// key (PKCS#8, PKCS#1 or SEC1), which it presents to the peers that dial it, and the
    /// CA certificates it trusts when it dials a peer. Uses rustls's ring provider with
    /// its safe default protocol versions; peers are not asked for client certificates
    /// (they authenticate with the bearer token, as in MinIO).
    pub fn from_pem(cert_chain: &[u8], key: &[u8], ca_roots: &[u8]) -> Result<TlsConfig, TlsError> {
        let chain = certs(CHAIN, cert_chain)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::Missing {
                what: KEY,
                wanted: "private key",
            },
            source => TlsError::Pem { what: KEY, source },
        })?;
        let mut roots = RootCertStore::empty();
        for (i, ca) in certs(ROOTS, ca_roots)?.into_iter().enumerate() {
            roots.add(ca).map_err(|e| TlsError::BadRoot {
                index: i + 1,
                // rustls says "invalid peer certificate", which is not what this is.
                reason: match e {
                    rustls::Error::InvalidCertificate(why) => format!("{why:?}"),
                    e => e.to_string(),
                },
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = |source| TlsError::Rejected {
            what: "crypto provider",
            source,
        };
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Rejected { what: KEY, source })?;
        Ok(TlsConfig::new(Arc::new(client), Arc::new(server)))
    }

    /// [`TlsConfig::from_pem`] with the three inputs read from files.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca_roots: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.to_owned(),
                source,
            })
        };
        TlsConfig::from_pem(
            &read(cert_chain.as_ref())?,
            &read(key.as_ref())?,
            &read(ca_roots.as_ref())?,
        )
    }

    /// The client side: used for the links this node dials.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client
    }

    /// The server side: used for the links this node accepts.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server
    }

    /// Runs the client handshake on `io`, checking the server's certificate against
    /// `server_name` (a DNS name or an IP address).
    pub(crate) async fn connect(&self, server_name: &str, io: BoxIo) -> io::Result<BoxIo> {
        let name = parse_server_name(server_name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = TlsConnector::from(self.client.clone())
            .connect(name, io)
            .await?;
        Ok(Box::new(tls))
    }

    /// Runs the server handshake on `io`.
    pub(crate) async fn accept(&self, io: BoxIo) -> io::Result<BoxIo> {
        let tls = TlsAcceptor::from(self.server.clone()).accept(io).await?;
        Ok(Box::new(tls))
    }
}

/// Every certificate in `pem`; at least one.
fn certs(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            what,
            wanted: "certificate",
        });
    }
    Ok(certs)
}

/// The name a TLS peer's certificate is checked against: a DNS name or an IP address.
pub(crate) fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| format!("{name:?} is not a valid TLS server name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(chain: &str, key: &str, roots: &str) -> String {
        TlsConfig::from_pem(chain.as_bytes(), key.as_bytes(), roots.as_bytes())
            .expect_err("bad PEM is refused")
            .to_string()
    }

    // Real certificates are generated at test time in `grid-conformance`
    // (`tls_suite.rs`); these inputs fail before a certificate is ever parsed.
    const JUNK_CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const JUNK_KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    #[test]
    fn pem_errors_name_the_input_and_the_reason() {
        assert_eq!(
            err("", JUNK_KEY, JUNK_CERT),
            "certificate chain: no certificate found in the PEM"
        );
        // A key file given as the chain holds no certificate either.
        assert_eq!(
            err(JUNK_KEY, JUNK_KEY, JUNK_CERT),
            "certificate chain: no certificate found in the PEM"
        );
        assert_eq!(
            err(JUNK_CERT, JUNK_CERT, JUNK_CERT),
            "private key: no private key found in the PEM"
        );
        assert_eq!(
            err(JUNK_CERT, JUNK_KEY, "not pem at all"),
            "CA roots: no certificate found in the PEM"
        );
        let truncated = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        let e = err(truncated, JUNK_KEY, JUNK_CERT);
        assert!(
            e.starts_with("certificate chain: bad PEM: missing section end marker"),
            "{e}"
        );
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = err(JUNK_CERT, JUNK_KEY, bad_base64);
        assert!(
            e.starts_with("CA roots: bad PEM: base64 decode error"),
            "{e}"
        );
        // Well-formed PEM around bytes that are no certificate.
        let two = format!("{JUNK_CERT}{JUNK_CERT}");
        assert_eq!(
            err(JUNK_CERT, JUNK_KEY, &two),
            "CA roots: certificate 1 cannot be a trust anchor: BadEncoding"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = TlsConfig::from_pem_files("/nonexistent/node.crt", "k", "c")
            .expect_err("no such file")
            .to_string();
        assert!(e.starts_with("read /nonexistent/node.crt: "), "{e}");
    }
}
