//! Certificates and keys for a control plane, generated with rcgen: serving CA and serving certificates, client CA and admin identity (O=system:masters), service-account signing keys.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// Everything one control plane needs, in memory.
pub struct Pki {
    serving_ca: Issuer<'static, KeyPair>,
    /// The CA that signs serving certificates (the apiserver's, kube-controller-manager's);
    /// clients trust it.
    pub serving_ca_pem: String,
    /// The CA the apiserver trusts for client certificates (`--client-ca-file`).
    pub client_ca_pem: String,
    /// The apiserver's serving certificate, for `localhost`, `127.0.0.1` and the in-cluster names.
    pub apiserver_serving: CertAndKey,
    /// The admin client identity: CN=`admin`, O=`system:masters`.
    pub admin: CertAndKey,
    /// The service-account token signing key (private, PEM).
    pub service_account_key_pem: String,
    /// The service-account token verification key (public, PEM).
    pub service_account_pub_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// File paths of a [`Pki`] written to disk by [`Pki::write`].
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// Serving CA certificate.
    pub serving_ca: PathBuf,
    /// Client CA certificate.
    pub client_ca: PathBuf,
    /// The apiserver's serving certificate.
    pub apiserver_cert: PathBuf,
    /// The apiserver's serving key.
    pub apiserver_key: PathBuf,
    /// Service-account signing key (private).
    pub sa_key: PathBuf,
    /// Service-account verification key (public).
    pub sa_pub: PathBuf,
}

fn ca(common_name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().context("generating a CA key")?;
    let cert = params.self_signed(&key).with_context(|| format!("self-signing CA {common_name}"))?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertAndKey> {
    let sans: Vec<String> = sans.iter().map(std::string::ToString::to_string).collect();
    let mut params =
        CertificateParams::new(sans).with_context(|| format!("certificate parameters for {common_name}"))?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        params.distinguished_name.push(DnType::OrganizationName, org);
    }
    params.use_authority_key_identifier_extension = true;
    // ECDSA keys only sign; KeyEncipherment is an RSA-only usage.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().with_context(|| format!("generating a key for {common_name}"))?;
    let cert = params.signed_by(&key, issuer).with_context(|| format!("signing the certificate of {common_name}"))?;
    Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The names a serving certificate is valid for.
const SERVING_NAMES: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

impl Pki {
    /// Generates a fresh set of ECDSA P-256 keys and certificates.
    pub fn generate() -> Result<Self> {
        let (serving_ca_pem, serving_ca) = ca("harness-serving-ca")?;
        let (client_ca_pem, client_ca) = ca("harness-client-ca")?;
        let apiserver_serving =
            leaf(&serving_ca, "kube-apiserver", None, SERVING_NAMES, ExtendedKeyUsagePurpose::ServerAuth)?;
        let admin = leaf(&client_ca, "admin", Some("system:masters"), &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        let sa = KeyPair::generate().context("generating the service-account signing key")?;
        Ok(Self {
            serving_ca,
            serving_ca_pem,
            client_ca_pem,
            apiserver_serving,
            admin,
            service_account_key_pem: sa.serialize_pem(),
            service_account_pub_pem: sa.public_key_pem(),
        })
    }

    /// A new serving certificate for `localhost`/`127.0.0.1`, signed by the serving CA (for
    /// kube-controller-manager's secure port).
    pub fn serving_cert(&self, common_name: &str) -> Result<CertAndKey> {
        leaf(&self.serving_ca, common_name, None, SERVING_NAMES, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Writes the files the apiserver reads into `dir` (mode 0600 for keys).
    pub fn write(&self, dir: &Path) -> Result<PkiFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = PkiFiles {
            serving_ca: dir.join("serving-ca.crt"),
            client_ca: dir.join("client-ca.crt"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        write_file(&files.serving_ca, &self.serving_ca_pem, false)?;
        write_file(&files.client_ca, &self.client_ca_pem, false)?;
        write_file(&files.apiserver_cert, &self.apiserver_serving.cert_pem, false)?;
        write_file(&files.apiserver_key, &self.apiserver_serving.key_pem, true)?;
        write_file(&files.sa_key, &self.service_account_key_pem, true)?;
        write_file(&files.sa_pub, &self.service_account_pub_pem, false)?;
        Ok(files)
    }
}

/// Writes `contents` to `path`, with mode 0600 when `secret`.
pub(crate) fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
