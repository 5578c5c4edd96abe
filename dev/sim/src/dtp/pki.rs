//! A throw-away test PKI (CA, server and client certificates) made at run time.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// SHA-1 thumbprint of a DER certificate, upper-case hex: what UNHCR pins.
pub(super) fn der_thumbprint(der: &[u8]) -> String {
    use sha1::Digest as _;
    hex::encode_upper(sha1::Sha1::digest(der))
}

/// A throw-away PKI made at run time: a CA, a server certificate for
/// `127.0.0.1`/`localhost`, and a client certificate, all signed by the CA.
#[derive(Clone)]
pub struct TestPki {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPki")
            .field("client_thumbprint", &self.client_thumbprint())
            .finish_non_exhaustive()
    }
}

/// Where [`TestPki::write_files`] put the files the bridge config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPkiFiles {
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// A fresh PKI. Key generation cannot fail with valid parameters, which
    /// these are, so this panics only on a broken crypto backend.
    pub fn generate() -> Self {
        Self::try_generate().expect("test PKI generation")
    }

    pub fn try_generate() -> Result<Self, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "referral bridge test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "dtp simulator");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "referral bridge client");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// SHA-1 thumbprint of the client certificate (what UNHCR would pin).
    pub fn client_thumbprint(&self) -> String {
        use rustls::pki_types::pem::PemObject as _;
        let cert =
            rustls::pki_types::CertificateDer::from_pem_slice(self.client_cert_pem.as_bytes())
                .expect("generated certificate is valid PEM");
        der_thumbprint(cert.as_ref())
    }

    /// Write the CA certificate and the client certificate and key (the key
    /// readable by the owner only) into `dir`.
    pub fn write_files(&self, dir: &Path) -> io::Result<TestPkiFiles> {
        let files = TestPkiFiles {
            ca_cert: dir.join("dtp-ca.pem"),
            client_cert: dir.join("dtp-client.pem"),
            client_key: dir.join("dtp-client.key"),
        };
        std::fs::write(&files.ca_cert, &self.ca_cert_pem)?;
        std::fs::write(&files.client_cert, &self.client_cert_pem)?;
        write_private(&files.client_key, self.client_key_pem.as_bytes())?;
        Ok(files)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_files_are_written_and_thumbprints_differ() {
        let pki = TestPki::generate();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write_files(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&files.client_cert).unwrap(),
            pki.client_cert_pem
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.client_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by the owner only");
        }
        assert_ne!(
            pki.client_thumbprint(),
            TestPki::generate().client_thumbprint()
        );
    }
}
