//! TLS termination with rustls: `--tls-cert` and `--tls-key` (or `tls_cert`,
//! `tls_key`) name PEM files, and the API is served over HTTPS only, with HTTP/2 and
//! HTTP/1.1 offered by ALPN. TLS 1.2 and 1.3, rustls' safe defaults; ring as the
//! cryptography. The key is read once at start-up and never logged.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The acceptor for the certificate chain at `cert` and its private key at `key`; an
/// error that says which file is wrong and how.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let open = |path: &Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let chain = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{} is not a PEM certificate chain: {error}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let private_key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|error| format!("{} is not a PEM private key: {error}", key.display()))?
        .ok_or_else(|| format!("{} holds no PEM private key", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|error| {
            format!(
                "{} and {} do not make a certificate and its key: {error}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
