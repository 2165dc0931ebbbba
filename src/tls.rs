//! TLS for the ForwardAuth hop: the server side verify speaks (rustls; ALPN `h2` then
//! `http/1.1`, so a proxy's HTTP/2 client multiplexes every auth request over one connection)
//! with a certificate re-read when its files change, and the private CA plus certificate that
//! `mcp-gateway tls generate` writes for operators who do not run their own PKI.
//!
//! A renewed certificate applies to new handshakes only; connections already open keep theirs,
//! so a rotation never drops a request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are looked at for a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The certificate chain and key files a listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads and checks both files: the chain (leaf first), the key that matches it.
    pub fn load(&self) -> Result<CertifiedKey, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate in it", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))?;
        Ok(certified)
    }

    fn modified(&self) -> Option<Stamp> {
        let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }
}

/// When the certificate and the key file were last modified.
type Stamp = (SystemTime, SystemTime);

/// The certificate handed to each new handshake, swapped when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<Stamp>)>,
}

/// What one look at the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but do not make a usable certificate (half-written, mismatched key):
    /// the previous one stays in use.
    Failed(String),
}

impl ReloadingCert {
    pub fn new(files: CertFiles) -> Result<Arc<Self>, String> {
        let stamp = files.modified();
        let certified = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new((Arc::new(certified), stamp)),
        }))
    }

    /// Reloads when either file's modification time moved (a failure is reported once per
    /// change, not at every look).
    pub fn check(&self) -> Reload {
        let stamp = self.files.modified();
        let seen = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        if stamp == seen {
            return Reload::Unchanged;
        }
        let loaded = self.files.load();
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        current.1 = stamp;
        match loaded {
            Ok(certified) => {
                current.0 = Arc::new(certified);
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// The server configuration for this certificate: TLS 1.2 and 1.3 (the HTTP server adds
    /// ALPN `h2` and `http/1.1`).
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct Generated {
    /// `ca.crt`: what the proxy trusts (Traefik's forwardAuth `tls.ca`).
    pub ca_cert: PathBuf,
    /// Whether the CA was made now (else the one in the folder signed the new certificate).
    pub new_ca: bool,
    /// `verify.crt` and `verify.key`: what verify serves.
    pub cert: CertFiles,
}

/// The CA's name; a CA already in the folder is reused under it, so certificates it signed
/// before stay valid and the proxy's trust does not change.
const CA_NAME: &str = "mcp-gateway local CA";
/// How long a generated certificate is valid; rerunning `tls generate` renews it.
pub const CERT_LIFETIME_DAYS: i64 = 365;
const CA_LIFETIME_DAYS: i64 = 3650;

/// Writes into `dir` a private CA (`ca.crt`, `ca.key`, kept when already there) and a
/// certificate for `names` (DNS names or IP addresses) signed by it (`verify.crt`,
/// `verify.key`), all ECDSA P-256. Files are replaced whole (written aside, then renamed), so
/// a verify watching them never reads half a file.
pub fn generate(dir: &Path, names: &[String]) -> Result<Generated, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    if names.is_empty() {
        return Err("--names: at least one DNS name or address".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let ca_key_path = dir.join("ca.key");
    let ca_cert_path = dir.join("ca.crt");
    let (ca_key, new_ca) = match std::fs::read_to_string(&ca_key_path) {
        Ok(pem) => (
            KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", ca_key_path.display()))?,
            !ca_cert_path.exists(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (KeyPair::generate().map_err(|e| e.to_string())?, true)
        }
        Err(e) => return Err(format!("{}: {e}", ca_key_path.display())),
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca.distinguished_name.push(DnType::CommonName, CA_NAME);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(CA_LIFETIME_DAYS);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;

    let mut leaf = CertificateParams::new(names.to_vec()).map_err(|e| format!("--names: {e}"))?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(CERT_LIFETIME_DAYS);
    let leaf_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(|e| e.to_string())?;

    let cert = CertFiles {
        cert: dir.join("verify.crt"),
        key: dir.join("verify.key"),
    };
    if new_ca {
        write_whole(&ca_key_path, &ca_key.serialize_pem(), true)?;
        write_whole(&ca_cert_path, &ca_cert.pem(), false)?;
    }
    // The key first: a watcher that sees only the new key fails to pair it and keeps the old.
    write_whole(&cert.key, &leaf_key.serialize_pem(), true)?;
    write_whole(&cert.cert, &leaf_cert.pem(), false)?;
    Ok(Generated {
        ca_cert: ca_cert_path,
        new_ca,
        cert,
    })
}

fn write_whole(path: &Path, contents: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    let aside = path.with_extension("tmp");
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&aside).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&aside, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load_and_a_rerun_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["verify".to_string(), "127.0.0.1".to_string()];
        let first = generate(dir.path(), &names).unwrap();
        assert!(first.new_ca);
        first.cert.load().unwrap();
        let ca_before = std::fs::read(&first.ca_cert).unwrap();
        let leaf_before = std::fs::read(&first.cert.cert).unwrap();
        let second = generate(dir.path(), &names).unwrap();
        assert!(!second.new_ca, "the CA is reused");
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca_before);
        assert_ne!(std::fs::read(&second.cert.cert).unwrap(), leaf_before);
        second.cert.load().unwrap();
    }

    #[test]
    fn a_half_written_renewal_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(dir.path(), &["verify".to_string()]).unwrap();
        let reloading = ReloadingCert::new(generated.cert.clone()).unwrap();
        assert_eq!(reloading.check(), Reload::Unchanged);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&generated.cert.cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(matches!(reloading.check(), Reload::Failed(_)));
        generate(dir.path(), &["verify".to_string()]).unwrap();
        assert_eq!(reloading.check(), Reload::Reloaded);
    }

    #[test]
    fn no_names_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(generate(dir.path(), &[]).is_err());
    }
}
