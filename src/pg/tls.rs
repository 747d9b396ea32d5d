//! TLS for the pool's and the listen connection's sockets (rustls on the
//! `ring` provider), chosen by the libpq options of the URL:
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (default) | when the server offers TLS | no |
//! | `require` | always (a server without TLS is refused) | no; with `sslrootcert`: as `verify-ca` (libpq does the same) |
//! | `verify-ca` | always | signed by a trusted root (any host name) |
//! | `verify-full` | always | signed by a trusted root and valid for the host name |
//!
//! Trusted roots: the PEM certificates of `sslrootcert=<file>`, or the Mozilla
//! root set compiled in (`webpki-roots`) when `sslrootcert` is absent or
//! `system`. libpq reads `~/.postgresql/root.crt` by default; durably does
//! not read files it was not told about. `allow` (libpq: plain first, TLS if
//! the server insists) is taken as `prefer`, which connects wherever `allow`
//! does. Any other `sslmode` is refused with an error naming it.
//!
//! The host name checked is the URL's host (`hostaddr=` can give the address
//! to connect to while the certificate is checked against the host).
//!
//! A client certificate (for servers that authenticate with `cert`, or
//! require one with `clientcert=verify-ca`/`verify-full`): `sslcert=<file>`
//! (PEM, the certificate first, then any intermediates) with
//! `sslkey=<file>` (its unencrypted PEM private key: PKCS#8, PKCS#1 or
//! SEC1), both or neither. As for the roots, durably reads no default
//! `~/.postgresql/postgresql.crt`; an encrypted key (`sslpassword`) is
//! refused with an error saying so.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The libpq `sslmode` values durably honours (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, certificate not checked (the default).
    Prefer,
    /// Always TLS, certificate not checked.
    Require,
    /// Always TLS, certificate chain checked against the roots.
    VerifyCa,
    /// Always TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<SslMode> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Validation(format!(
                    "invalid PostgreSQL url: unknown sslmode {other:?} (use disable, allow, \
                     prefer, require, verify-ca or verify-full)"
                )))
            }
        })
    }

    /// What tokio-postgres negotiates: whether TLS is tried, and required.
    fn negotiation(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        }
    }
}

/// The TLS options of a URL, taken out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `sslmode` (default `prefer`, as in libpq).
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots; `None` (or `system`) for
    /// the Mozilla roots compiled in.
    pub root_cert: Option<String>,
    /// `sslcert` and `sslkey`: the client certificate (PEM chain) and its
    /// private key (PEM), or `None`.
    pub client: Option<(String, String)>,
}

/// Splits the TLS options (`sslmode`, `sslrootcert`) off a `postgres://`
/// URL: returns the URL without them (for tokio-postgres, which knows only
/// some `sslmode` values and no `sslrootcert`) and the options. A URL of the
/// `key=value` form is returned unchanged, its `sslmode` read by
/// tokio-postgres (see [`TlsOptions::from_config`]).
pub fn split_url(url: &str) -> Result<(String, Option<TlsOptions>)> {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Ok((url.to_string(), None));
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Some(TlsOptions::default())));
    };
    let mut opts = TlsOptions::default();
    let mut kept = Vec::new();
    let (mut cert, mut key) = (None, None);
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(k)?.as_str() {
            "sslmode" => opts.mode = SslMode::parse(&decode(v)?)?,
            name @ ("sslcert" | "sslkey") => {
                let v = decode(v)?;
                if v.is_empty() {
                    return Err(Error::Validation(format!(
                        "invalid PostgreSQL url: {name} is empty (a PEM file)"
                    )));
                }
                *(if name == "sslcert" {
                    &mut cert
                } else {
                    &mut key
                }) = Some(v);
            }
            "sslpassword" => {
                return Err(Error::Validation(
                    "invalid PostgreSQL url: sslpassword is not supported (an encrypted client \
                     key): give sslkey an unencrypted PEM key file (e.g. `openssl pkey -in \
                     key.pem -out plain.pem`) readable only by the app"
                        .into(),
                ))
            }
            "sslrootcert" => {
                let v = decode(v)?;
                if v.is_empty() {
                    return Err(Error::Validation(
                        "invalid PostgreSQL url: sslrootcert is empty (a PEM file of trusted \
                         root certificates, or system)"
                            .into(),
                    ));
                }
                opts.root_cert = (v != "system").then_some(v);
            }
            _ => kept.push(pair),
        }
    }
    opts.client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::Validation(
                "invalid PostgreSQL url: sslcert needs sslkey (the client certificate's private \
                 key file)"
                    .into(),
            ))
        }
        (None, Some(_)) => {
            return Err(Error::Validation(
                "invalid PostgreSQL url: sslkey needs sslcert (the client certificate file)".into(),
            ))
        }
    };
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, Some(opts)))
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            mode: SslMode::Prefer,
            root_cert: None,
            client: None,
        }
    }
}

impl TlsOptions {
    /// The options of a `key=value` connection string (parsed by tokio-postgres).
    pub fn from_config(cfg: &tokio_postgres::Config) -> TlsOptions {
        TlsOptions {
            mode: match cfg.get_ssl_mode() {
                PgSslMode::Disable => SslMode::Disable,
                PgSslMode::Require => SslMode::Require,
                _ => SslMode::Prefer,
            },
            root_cert: None,
            client: None,
        }
    }

    /// Sets what `cfg` negotiates, and builds the connector for its
    /// handshakes. Reads the `sslrootcert` file (a missing, unreadable or
    /// certificate-less file is an error naming it).
    pub fn apply(&self, cfg: &mut tokio_postgres::Config) -> Result<MakeRustlsConnect> {
        cfg.ssl_mode(self.mode.negotiation());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?;
        // libpq: a root file given with `require` makes it `verify-ca`.
        let mode = match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (m, _) => m,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(Unverified { provider })
            }
            SslMode::VerifyCa => Arc::new(ChainOnly {
                roots: Arc::new(self.roots()?),
                provider,
            }),
            SslMode::VerifyFull => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider)
                    .build()
                    .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let (chain, key_der) = client_identity(cert, key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    Error::Validation(format!(
                        "sslcert {cert:?} and sslkey {key:?} cannot be used together: {e}"
                    ))
                })?
            }
        };
        // What libpq sends; PostgreSQL 17 requires it for sslnegotiation=direct.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }

    /// The trusted roots: the `sslrootcert` file, or the compiled-in Mozilla set.
    fn roots(&self) -> Result<RootCertStore> {
        let Some(path) = &self.root_cert else {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        };
        let bad = |why: String| {
            Error::Validation(format!(
                "sslrootcert {path:?}: {why} (a PEM file of trusted root certificates)"
            ))
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| bad(format!("not valid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("holds an unusable certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("holds no certificate".into()));
        }
        Ok(roots)
    }
}

/// Reads `sslcert` (a PEM chain, the client's certificate first) and
/// `sslkey` (its PEM private key); errors name the file and what is wrong.
fn client_identity(
    cert: &str,
    key: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let read = |what: &str, path: &str| {
        std::fs::read(path)
            .map_err(|e| Error::Validation(format!("{what} {path:?}: cannot read it: {e}")))
    };
    let bytes = read("sslcert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Validation(format!("sslcert {cert:?}: not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Validation(format!(
            "sslcert {cert:?}: holds no certificate (a PEM file, -----BEGIN CERTIFICATE-----)"
        )));
    }
    let bytes = read("sslkey", key)?;
    if bytes.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") {
        return Err(Error::Validation(format!(
            "sslkey {key:?}: the key is encrypted, which is not supported: decrypt it \
             (`openssl pkey -in key.pem -out plain.pem`) into a file readable only by the app"
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        Error::Validation(format!(
            "sslkey {key:?}: no usable private key in it ({e}; a PEM file: PKCS#8, PKCS#1 or SEC1)"
        ))
    })?;
    Ok((chain, key_der))
}

/// Percent-decodes a URL query part.
fn decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::Validation(format!(
                        "invalid PostgreSQL url: bad percent-encoding in {s:?}"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        Error::Validation(format!(
            "invalid PostgreSQL url: {s:?} is not UTF-8 once decoded"
        ))
    })
}

/// `prefer`/`require`: encrypts, accepts any certificate (as libpq does),
/// but still checks the handshake's signatures against it.
#[derive(Debug)]
struct Unverified {
    provider: Arc<CryptoProvider>,
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

macro_rules! signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signatures!();
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    signatures!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsOptions) {
        let (u, o) = split_url(url).unwrap();
        (u, o.unwrap())
    }

    #[test]
    fn takes_the_tls_options_out_of_the_url() {
        let (u, o) = split("postgres://u@h:5/db");
        assert_eq!(u, "postgres://u@h:5/db");
        assert_eq!(o, TlsOptions::default());
        assert_eq!(o.mode, SslMode::Prefer);

        let (u, o) = split(
            "postgresql://u@h/db?application_name=a&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(
            u,
            "postgresql://u@h/db?application_name=a&connect_timeout=3"
        );
        assert_eq!(o.mode, SslMode::VerifyFull);
        assert_eq!(o.root_cert.as_deref(), Some("/tmp/ca.pem"));

        let (u, o) = split("postgres://u@h/db?sslmode=require");
        assert_eq!(u, "postgres://u@h/db");
        assert_eq!(o.mode, SslMode::Require);
        assert_eq!(
            split("postgres://h/db?sslmode=disable").1.mode,
            SslMode::Disable
        );
        assert_eq!(
            split("postgres://h/db?sslmode=allow").1.mode,
            SslMode::Prefer
        );
        assert_eq!(
            split("postgres://h/db?sslmode=verify-ca").1.mode,
            SslMode::VerifyCa
        );
        assert_eq!(
            split("postgres://h/db?sslrootcert=system").1.root_cert,
            None
        );
        // The key=value form is tokio-postgres's to parse.
        let (u, o) = split_url("host=h sslmode=require").unwrap();
        assert_eq!((u.as_str(), o), ("host=h sslmode=require", None));
    }

    #[test]
    fn bad_tls_options_are_named() {
        let msg = |url: &str| split_url(url).unwrap_err().to_string();
        let m = msg("postgres://h/db?sslmode=verify_full");
        assert!(m.contains("unknown sslmode \"verify_full\""), "{m}");
        assert!(m.contains("verify-full"), "{m}");
        assert!(msg("postgres://h/db?sslmode=").contains("unknown sslmode \"\""));
        assert!(msg("postgres://h/db?sslrootcert=").contains("sslrootcert is empty"));
        assert!(msg("postgres://h/db?sslmode=re%2").contains("percent-encoding"));
    }

    #[test]
    fn client_certificate_options() {
        let (u, o) =
            split("postgres://u@h/db?sslcert=%2Fk%2Fc.pem&application_name=a&sslkey=/k/c.key");
        assert_eq!(u, "postgres://u@h/db?application_name=a");
        assert_eq!(o.client, Some(("/k/c.pem".into(), "/k/c.key".into())));
        let msg = |url: &str| split_url(url).unwrap_err().to_string();
        let m = msg("postgres://h/db?sslcert=/c.pem");
        assert!(m.contains("sslcert needs sslkey"), "{m}");
        let m = msg("postgres://h/db?sslkey=/c.key");
        assert!(m.contains("sslkey needs sslcert"), "{m}");
        let m = msg("postgres://h/db?sslcert=&sslkey=/c.key");
        assert!(m.contains("sslcert is empty"), "{m}");
        let m = msg("postgres://h/db?sslcert=/c.pem&sslkey=/c.key&sslpassword=x");
        assert!(m.contains("sslpassword is not supported"), "{m}");
    }

    #[test]
    fn client_files_that_cannot_serve_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str, text: Option<&str>| {
            let p = dir.path().join(name);
            if let Some(t) = text {
                std::fs::write(&p, t).unwrap();
            }
            p.to_string_lossy().into_owned()
        };
        // A syntactically valid PEM certificate block is enough to get to the key.
        let cert = path(
            "c.pem",
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        );
        let missing = path("nope.pem", None);
        let empty = path("empty.pem", Some("nothing\n"));
        let encrypted = path(
            "enc.key",
            Some("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
        );
        for (c, k, what, why) in [
            (&missing, &empty, "sslcert", "cannot read it"),
            (&empty, &empty, "sslcert", "holds no certificate"),
            (&cert, &missing, "sslkey", "cannot read it"),
            (&cert, &empty, "sslkey", "no usable private key"),
            (
                &cert,
                &encrypted,
                "sslkey",
                "encrypted, which is not supported",
            ),
        ] {
            let m = client_identity(c, k).err().unwrap().to_string();
            let file = if what == "sslcert" { c } else { k };
            assert!(
                m.contains(&format!("{what} {file:?}")) && m.contains(why),
                "{m}"
            );
        }
    }

    #[test]
    fn a_root_file_that_cannot_serve_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (file, why) in [
            (&missing, "cannot read it"),
            (&empty, "holds no certificate"),
            (&bad, "unusable certificate"),
        ] {
            let opts = TlsOptions {
                mode: SslMode::VerifyFull,
                root_cert: Some(file.to_string_lossy().into_owned()),
                client: None,
            };
            let mut cfg = tokio_postgres::Config::new();
            let m = opts.apply(&mut cfg).err().unwrap().to_string();
            assert!(
                m.contains(&*file.to_string_lossy()) && m.contains(why),
                "{m}"
            );
        }
        // Without a file: the compiled-in roots, and TLS is required.
        let mut cfg = tokio_postgres::Config::new();
        let opts = TlsOptions {
            mode: SslMode::VerifyFull,
            root_cert: None,
            client: None,
        };
        opts.apply(&mut cfg).unwrap();
        assert_eq!(cfg.get_ssl_mode(), PgSslMode::Require);
        assert!(opts.roots().unwrap().len() > 50);
    }
}
