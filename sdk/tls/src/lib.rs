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

/// The files of one node of a cluster made by [`make_cluster`].
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Makes a cluster's certificate authority in `dir` (`ca.pem`; its key is used here and never
/// written) and one certificate per node, signed by it (`node-N.pem`, `node-N.key`, mode
/// 0600): names `silt-node-N`, `localhost`, `127.0.0.1`, `::1` and `extra_names` (the
/// addresses clients use), for both ends of a TLS connection, so each node serves clients and
/// other nodes with it and presents it to the nodes it calls (mTLS). Clients trust `ca.pem`.
/// Files already there are replaced.
pub fn make_cluster(dir: &Path, nodes: &[u64], extra_names: &[String]) -> anyhow::Result<Vec<NodeFiles>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Silt cluster CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_key = rcgen::KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("signing the CA certificate")?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).with_context(|| format!("writing {}", ca_path.display()))?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut files = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut names = vec![
            format!("silt-node-{node}"),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(extra_names.iter().filter(|n| !names.contains(n)).cloned().collect::<Vec<_>>());
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("silt-node-{node}"));
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().context("generating a node key")?;
        let cert = params.signed_by(&key, &issuer).context("signing a node certificate")?;
        let node_files = NodeFiles {
            cert: dir.join(format!("node-{node}.pem")),
            key: dir.join(format!("node-{node}.key")),
        };
        write_private(&node_files.key, key.serialize_pem().as_bytes())?;
        std::fs::write(&node_files.cert, cert.pem())
            .with_context(|| format!("writing {}", node_files.cert.display()))?;
        files.push(node_files);
    }
    Ok(files)
}
