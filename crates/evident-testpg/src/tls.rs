//! The TLS side of a test cluster: a throwaway certificate authority and the server
//! certificate it signs for `localhost` and `127.0.0.1` (generated with rcgen at start, never
//! reused), an unrelated CA for tests that need the wrong one, the files PostgreSQL reads
//! (the key owned by the server's user, mode 0600, as PostgreSQL demands), and the
//! `pg_hba.conf` that takes connections over TLS only, except on [`PLAIN_ONLY_DB`].

use crate::{Error, err};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The one database of a TLS cluster that takes plain connections and refuses TLS ones (for
/// the tests of libpq's `prefer` fallback); every other database takes TLS connections only.
pub const PLAIN_ONLY_DB: &str = "evident_plain_only";

/// The certificate files of a TLS cluster.
#[derive(Debug)]
pub(crate) struct TlsFiles {
    /// PEM of the CA that signed the server's certificate.
    pub(crate) ca: PathBuf,
    /// PEM of a CA that signed nothing of this cluster.
    pub(crate) unrelated_ca: PathBuf,
    /// The server's certificate and key (`ssl_cert_file`, `ssl_key_file`).
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

/// `pg_hba.conf` of a TLS cluster: TLS only over TCP, but [`PLAIN_ONLY_DB`] without TLS only.
/// (The first line matching the connection type, database, user and address decides.)
pub(crate) fn hba_conf() -> String {
    format!(
        "local all all trust\n\
         hostnossl {PLAIN_ONLY_DB} all 127.0.0.1/32 trust\n\
         hostssl {PLAIN_ONLY_DB} all 127.0.0.1/32 reject\n\
         hostssl all all 127.0.0.1/32 trust\n"
    )
}

fn generate(e: rcgen::Error) -> Error {
    err(format!("cannot generate the test certificates: {e}"))
}

/// A new CA: its parameters (to sign with) and key, and its certificate's PEM.
fn new_ca(name: &str) -> Result<(Issuer<'static, KeyPair>, String), Error> {
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).map_err(generate)?.pem();
    Ok((Issuer::new(params, key), pem))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    std::fs::write(path, text)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// Generates the certificates into `dir` (created). `owner` (`chown` syntax), when given, is
/// the server's user, who must own the key.
pub(crate) fn write_certificates(dir: &Path, owner: Option<&str>) -> Result<TlsFiles, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let (ca, ca_pem) = new_ca("Evident test CA")?;
    let (_, unrelated_pem) = new_ca("Evident unrelated test CA")?;
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .map_err(generate)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).map_err(generate)?;
    let files = TlsFiles {
        ca: dir.join("ca.crt"),
        unrelated_ca: dir.join("unrelated-ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    write(&files.ca, &ca_pem, 0o644)?;
    write(&files.unrelated_ca, &unrelated_pem, 0o644)?;
    write(&files.server_cert, &cert.pem(), 0o644)?;
    write(&files.server_key, &key.serialize_pem(), 0o600)?;
    if let Some(owner) = owner {
        let status = std::process::Command::new("chown")
            .arg(owner)
            .arg(&files.server_key)
            .status()
            .map_err(|e| err(format!("cannot run chown: {e}")))?;
        if !status.success() {
            return Err(err(format!(
                "chown {owner} {} failed: {status}",
                files.server_key.display()
            )));
        }
    }
    Ok(files)
}
