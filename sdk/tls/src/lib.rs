//! The TLS identity of a Silt server: a self-signed certificate created on first start in
//! `DIR` (the broker's `DATA_DIR/tls/`, which clients trust with `--ca-cert
//! DATA_DIR/tls/cert.pem`; the bridge's for MQTT over TLS), or a configured certificate.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificates of a PEM file (a chain, or CA certificates); at least one.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// Loads `cert_path` (PEM, the chain) and `key_path` (PEM).
pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Identity> {
    let certs = load_certs(cert_path)?;
    let key =
        PrivateKeyDer::from_pem_file(key_path).with_context(|| format!("reading {}", key_path.display()))?;
    Ok((certs, key))
}

/// Loads the certificate and key from `dir`, creating them first if absent.
pub fn load_or_create(dir: &Path, listen: SocketAddr, extra_names: &[String]) -> anyhow::Result<Identity> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        if !listen.ip().is_unspecified() && !names.contains(&listen.ip().to_string()) {
            names.push(listen.ip().to_string());
        }
        names.extend(extra_names.iter().cloned());
        let ck = rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
        // Key first, then the certificate: a crash in between leaves no certificate, so the
        // next start generates both again instead of pairing a certificate with a lost key.
        write_private(&key_path, ck.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, ck.cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(cert = %cert_path.display(), "created a self-signed certificate");
    }
    load(&cert_path, &key_path)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
