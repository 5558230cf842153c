//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` parameters of the storage URL ask
//! for it. Owns taking those two parameters out of the URL (`postgres::Config` knows only
//! `disable`, `prefer` and `require`, and no `sslrootcert`), the rustls client configuration
//! each mode means (ring provider, TLS 1.2 and 1.3), the certificate verifiers (none for
//! `require`, the chain for `verify-ca`, the chain and the host name for `verify-full`),
//! connecting with libpq's fallbacks (`prefer` retries without TLS, `allow` with it), and the
//! messages that name the parameter at fault.
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow` | only if the server refuses a plain connection | as `require` |
//! | `prefer` (default) | if the server takes TLS (else plain, as libpq) | as `require` |
//! | `require` | always | not at all; with `sslrootcert=PATH`, its chain (as libpq) |
//! | `verify-ca` | always | its chain, to `sslrootcert` or the system's roots |
//! | `verify-full` | always | its chain and that it names the host connected to |
//!
//! `sslrootcert=system` (libpq 16) trusts the system's roots and means `verify-full`; a weaker
//! mode with it is refused, as libpq does.

use super::{map_pg_err, redact_url};
use crate::StoreError;
use percent_encoding::percent_decode_str;
use postgres::config::SslMode as WireMode;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.name() == value)
    }
}

/// What the server's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    /// Nothing: any certificate is taken (`require`, `prefer`, `allow` without `sslrootcert`).
    Nothing,
    /// The certificates of the PEM file `sslrootcert` names.
    File(String),
    /// The operating system's root certificates.
    System,
}

impl Trust {
    fn describe(&self) -> String {
        match self {
            Trust::Nothing => "nothing".to_owned(),
            Trust::File(path) => format!("a CA certificate of sslrootcert {path}"),
            Trust::System => "the system's root certificates".to_owned(),
        }
    }
}

/// The TLS settings of one storage URL, with the rustls connector they mean.
pub(super) struct Tls {
    mode: SslMode,
    trust: Trust,
    /// `None` for `disable`.
    connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// `url` without its `sslmode` and `sslrootcert` parameters, and their percent-decoded values
/// (the last of each wins, as in libpq). Anything that is not a URL is returned as is.
fn split_url(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let Some((base, params)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for param in params.split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let decode = |what: &str, s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
        };
        match decode("a parameter name", key)?.as_str() {
            "sslmode" => mode = Some(decode("sslmode", value)?),
            "sslrootcert" => root = Some(decode("sslrootcert", value)?),
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root))
}

/// The mode and what certificates are checked against, from the `sslmode` and `sslrootcert`
/// parameters (absent: `None`).
fn decide(mode: Option<&str>, root: Option<String>) -> Result<(SslMode, Trust), String> {
    let system = root.as_deref() == Some("system");
    let mode = match mode {
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
        Some(value) => SslMode::parse(value).ok_or_else(|| {
            format!(
                "sslmode {value:?} is not one of {}",
                SslMode::ALL.map(SslMode::name).join(", ")
            )
        })?,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(format!(
            "sslrootcert=system needs sslmode=verify-full, not {}: the system's roots vouch for \
             every public host name, so the name must be checked too",
            mode.name()
        ));
    }
    let trust = match (mode, root) {
        (SslMode::Disable, _) => Trust::Nothing,
        (_, Some(path)) if path != "system" => Trust::File(path),
        (SslMode::VerifyCa | SslMode::VerifyFull, _) => Trust::System,
        (_, _) => Trust::Nothing,
    };
    Ok((mode, trust))
}

impl Tls {
    /// The TLS settings of `url` and the URL without them, for `postgres::Config`. Reads the
    /// `sslrootcert` file (or the system's roots) now, so that a bad one is an error at open.
    pub(super) fn from_url(url: &str) -> Result<(String, Tls), StoreError> {
        let fail = |message: String| {
            StoreError::Backend(format!("storage {:?}: {message}", redact_url(url)))
        };
        let (rest, mode, root) = split_url(url).map_err(fail)?;
        let (mode, trust) = decide(mode.as_deref(), root).map_err(fail)?;
        let connector = if mode == SslMode::Disable {
            None
        } else {
            Some(MakeRustlsConnect::new(
                client_config(mode, &trust).map_err(fail)?,
            ))
        };
        Ok((
            rest,
            Tls {
                mode,
                trust,
                connector,
            },
        ))
    }

    /// Opens a session with `config` as `sslmode` says, falling back as libpq does: `prefer`
    /// retries without TLS when the TLS attempt reached the server but failed (handshake, or
    /// the server refused the session over TLS); `allow` retries with TLS when the server
    /// refused a plain session. A server that cannot be reached is not tried twice.
    pub(super) fn connect(&self, config: &Config, location: &str) -> Result<Client, StoreError> {
        match (self.mode, &self.connector) {
            (SslMode::Disable, _) | (_, None) => {
                plain(config).map_err(|e| self.describe(e, location))
            }
            (SslMode::Prefer, Some(tls)) => match encrypted(config, tls, WireMode::Prefer) {
                Ok(client) => Ok(client),
                Err(e) if e.as_db_error().is_some() || is_tls_failure(&e) => {
                    plain(config).map_err(|second| {
                        StoreError::Backend(format!(
                            "PostgreSQL at {location}: over TLS: {}; then without TLS \
                             (sslmode=prefer): {}",
                            detail(self.describe(e, location), location),
                            detail(self.describe(second, location), location),
                        ))
                    })
                }
                Err(e) => Err(self.describe(e, location)),
            },
            (SslMode::Allow, Some(tls)) => match plain(config) {
                Ok(client) => Ok(client),
                Err(e) if e.as_db_error().is_some() => encrypted(config, tls, WireMode::Require)
                    .map_err(|second| {
                        StoreError::Backend(format!(
                            "PostgreSQL at {location}: without TLS: {}; then over TLS \
                             (sslmode=allow): {}",
                            detail(map_pg_err(e, location), location),
                            detail(self.describe(second, location), location),
                        ))
                    }),
                Err(e) => Err(self.describe(e, location)),
            },
            (_, Some(tls)) => {
                encrypted(config, tls, WireMode::Require).map_err(|e| self.describe(e, location))
            }
        }
    }

    /// A connection error as a store error, with what `sslmode` asked for when it explains
    /// the failure.
    fn describe(&self, e: postgres::Error, location: &str) -> StoreError {
        let no_encryption_rule = e.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("no encryption")
        });
        let hint = if is_tls_failure(&e) && self.trust != Trust::Nothing {
            Some(format!(
                "sslmode={}: the server's certificate must chain to {}{}",
                self.mode.name(),
                self.trust.describe(),
                if self.mode == SslMode::VerifyFull {
                    " and name the host connected to"
                } else {
                    " (its host name is not checked)"
                }
            ))
        } else if no_encryption_rule && self.mode == SslMode::Disable {
            Some(
                "sslmode=disable, but the server takes this connection only over TLS: use \
                 sslmode=verify-full, verify-ca or require"
                    .to_owned(),
            )
        } else {
            None
        };
        let error = map_pg_err(e, location);
        match (error, hint) {
            (StoreError::Backend(message), Some(hint)) => {
                StoreError::Backend(format!("{message} ({hint})"))
            }
            (error, _) => error,
        }
    }
}

/// The message of a connection error without its `PostgreSQL at LOCATION: ` prefix (for a
/// message that tells of two attempts).
fn detail(e: StoreError, location: &str) -> String {
    let message = match e {
        StoreError::Full(m)
        | StoreError::NotFound(m)
        | StoreError::Locked(m)
        | StoreError::Backend(m) => m,
        StoreError::Corrupt { problem, .. } => problem,
        e @ (StoreError::CursorBackwards { .. } | StoreError::WitnessMoved { .. }) => e.to_string(),
    };
    match message.strip_prefix(&format!("PostgreSQL at {location}: ")) {
        Some(rest) => rest.to_owned(),
        None => message,
    }
}

fn plain(config: &Config) -> Result<Client, postgres::Error> {
    let mut config = config.clone();
    config.ssl_mode(WireMode::Disable);
    config.connect(NoTls)
}

fn encrypted(
    config: &Config,
    tls: &MakeRustlsConnect,
    mode: WireMode,
) -> Result<Client, postgres::Error> {
    let mut config = config.clone();
    config.ssl_mode(mode);
    config.connect(tls.clone())
}

/// Whether `e` comes from the TLS layer (a handshake or certificate failure, which rustls
/// reports inside an `io::Error`).
fn is_tls_failure(e: &postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(error) = source {
        if error.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if inner.is::<rustls::Error>() {
                return true;
            }
        }
        source = error.source();
    }
    false
}

/// The rustls client configuration of `mode` checking certificates against `trust`.
fn client_config(mode: SslMode, trust: &Trust) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS protocol version available: {e}"))?;
    let roots = match trust {
        Trust::Nothing => None,
        Trust::File(path) => Some(roots_from_file(path)?),
        Trust::System => Some(system_roots(mode)?),
    };
    let mut config = match roots {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms }))
            .with_no_client_auth(),
        Some(roots) if mode == SslMode::VerifyFull => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Some(roots) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots: Arc::new(roots),
                algorithms,
            }))
            .with_no_client_auth(),
    };
    // What libpq 17 sends, and what PostgreSQL 17 requires with `sslnegotiation=direct`.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The CA certificates of the PEM file `path` (`sslrootcert`).
fn roots_from_file(path: &str) -> Result<RootCertStore, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("sslrootcert {path} cannot be read: {e}"))?;
    let mut roots = RootCertStore::empty();
    for (n, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| format!("sslrootcert {path} is not a valid PEM file: {e}"))?;
        roots.add(cert).map_err(|e| {
            format!(
                "sslrootcert {path}: certificate {} is not a usable CA certificate: {e}",
                n + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(roots)
}

/// The operating system's root certificates, for `verify-ca` and `verify-full` without a
/// `sslrootcert` file.
fn system_roots(mode: SslMode) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "sslmode={} checks the server's certificate against the system's root \
             certificates when no sslrootcert is given, but none could be loaded{}: name the \
             CA certificate file with sslrootcert=PATH",
            mode.name(),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        ));
    }
    Ok(roots)
}

/// The verifier of `require` (and of `prefer` and `allow`) without `sslrootcert`, doing what
/// libpq does then (OpenSSL with `SSL_VERIFY_NONE`): the session is encrypted, but nothing
/// about the server's certificate is checked, neither its chain, its dates nor its names, so
/// an attacker on the path can pose as the server with a certificate of its own. This is
/// protection against eavesdropping only, which is all `require` promises.
///
/// What stays checked is what the handshake itself rests on: the server's signature over the
/// handshake, made with the private key of the certificate it presented (TLS 1.3
/// CertificateVerify, TLS 1.2 ServerKeyExchange), as OpenSSL checks it whatever the verify
/// mode. Skipping it would let a peer present a certificate whose key it does not hold, for
/// instance the real server's, and SCRAM channel binding (`tls-server-end-point`, which binds
/// the password exchange to the certificate) would then no longer reveal such a man in the
/// middle.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The verifier of `verify-ca` (and of the weaker modes given a `sslrootcert` file, as in
/// libpq): the server's certificate must chain to one of `roots` and be valid now, for
/// server authentication; the host name is not checked (that is `verify-full`). Handshake
/// signatures are checked as always.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(url: &str) -> String {
        match Tls::from_url(url) {
            Err(StoreError::Backend(m)) => m,
            other => panic!("expected an error for {url}, got {other:?}"),
        }
    }

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_stays_verbatim() {
        let (rest, mode, root) = split_url(
            "postgres://u:p@h:5/d?application_name=a%20b&sslmode=require&sslrootcert=%2Fx%20y%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@h:5/d?application_name=a%20b&connect_timeout=3"
        );
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root.as_deref(), Some("/x y/ca.pem"));
        let (rest, mode, root) = split_url("postgres://h/d?sslmode=disable").unwrap();
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root),
            ("postgres://h/d", Some("disable"), None)
        );
        // The last one wins, as in libpq.
        let (_, mode, _) = split_url("postgres://h/d?sslmode=disable&sslmode=verify-ca").unwrap();
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(
            split_url("postgres://h/d").unwrap(),
            ("postgres://h/d".to_owned(), None, None)
        );
    }

    #[test]
    fn modes_and_what_they_trust() {
        let file = || Some("/etc/ca.pem".to_owned());
        let path = || Trust::File("/etc/ca.pem".to_owned());
        let system = || Some("system".to_owned());
        let cases = [
            (None, None, SslMode::Prefer, Trust::Nothing),
            (Some("disable"), file(), SslMode::Disable, Trust::Nothing),
            (Some("allow"), None, SslMode::Allow, Trust::Nothing),
            (Some("prefer"), None, SslMode::Prefer, Trust::Nothing),
            (Some("require"), None, SslMode::Require, Trust::Nothing),
            // A root file makes libpq check the chain in the weaker modes too.
            (None, file(), SslMode::Prefer, path()),
            (Some("allow"), file(), SslMode::Allow, path()),
            (Some("require"), file(), SslMode::Require, path()),
            (Some("verify-ca"), file(), SslMode::VerifyCa, path()),
            (Some("verify-full"), file(), SslMode::VerifyFull, path()),
            (Some("verify-ca"), None, SslMode::VerifyCa, Trust::System),
            (
                Some("verify-full"),
                None,
                SslMode::VerifyFull,
                Trust::System,
            ),
            (None, system(), SslMode::VerifyFull, Trust::System),
            (
                Some("verify-full"),
                system(),
                SslMode::VerifyFull,
                Trust::System,
            ),
        ];
        for (mode, root, want_mode, want_trust) in cases {
            let what = format!("{mode:?} {root:?}");
            assert_eq!(
                decide(mode, root).unwrap(),
                (want_mode, want_trust),
                "{what}"
            );
        }
        for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
            let m = decide(Some(weak), system()).unwrap_err();
            assert!(
                m.contains("sslrootcert=system needs sslmode=verify-full"),
                "{m}"
            );
        }
        // Building the connectors of the modes that need no file.
        for mode in ["allow", "prefer", "require"] {
            let (_, tls) = Tls::from_url(&format!("postgres://h/d?sslmode={mode}")).unwrap();
            assert!(tls.connector.is_some(), "{mode}");
        }
        let (_, tls) = Tls::from_url("postgres://h/d?sslmode=disable").unwrap();
        assert!(tls.connector.is_none());
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let m = error_of("postgres://u:secret@h/d?sslmode=verify_full");
        assert!(m.contains("sslmode \"verify_full\" is not one of disable, allow, prefer, require, verify-ca, verify-full"), "{m}");
        assert!(!m.contains("secret"), "{m}");
        let m = error_of("postgres://h/d?sslmode=require&sslrootcert=system");
        assert!(
            m.contains("sslrootcert=system needs sslmode=verify-full"),
            "{m}"
        );
        let m = error_of("postgres://h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        assert!(
            m.contains("sslrootcert /nonexistent/ca.pem cannot be read"),
            "{m}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let m = error_of(&format!(
            "postgres://h/d?sslmode=verify-ca&sslrootcert={}",
            junk.display()
        ));
        assert!(m.contains("holds no PEM certificate"), "{m}");
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let m = error_of(&format!(
            "postgres://h/d?sslmode=verify-full&sslrootcert={}",
            bad.display()
        ));
        assert!(
            m.contains("certificate 1 is not a usable CA certificate"),
            "{m}"
        );
        let m = error_of("postgres://h/d?sslmode=%FF");
        assert!(m.contains("sslmode is not UTF-8"), "{m}");
    }
}
