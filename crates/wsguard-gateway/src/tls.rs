//! TLS: the public listener's server configuration (`wss://` termination) and the client
//! configuration used to dial `wss://` upstreams.
//!
//! Owns reading PEM certificates and keys and building rustls configurations with the `ring`
//! provider and rustls' safe defaults (TLS 1.2 and 1.3). Errors name the configuration key and
//! the file, never the key material. It must not accept connections or dial: the server does.

use std::path::Path;

use crate::config::{ConfigError, TlsConfig};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                key,
                format!("{}: not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key,
            format!(
                "{}: no certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The public listener's TLS configuration; `at` is the key prefix for errors
/// (`gateway.tls`).
pub fn server_config(at: &str, tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let chain = certs(&format!("{at}.cert"), &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        ConfigError::new(
            format!("{at}.key"),
            format!(
                "{}: no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}",
                tls.key.display()
            ),
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(at, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            ConfigError::new(
                at,
                format!("the certificate and key do not make a usable pair: {e}"),
            )
        })?;
    // WebSocket upgrades are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration for `wss://` upstreams: the system's roots, or only the CA
/// certificates in `ca` when given (`at` names the key for errors: `route.upstream_ca`).
pub fn client_config(
    at: &str,
    ca: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certs(at, path)? {
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new(at, format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Unparseable system certificates are skipped, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(ConfigError::new(
                    at,
                    format!("no system root certificates found; set {at} to a CA file"),
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(at, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn errors_name_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
        };
        let e = server_config("gateway.tls", &missing)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gateway.tls.cert: cannot read"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all\n").unwrap();
        let e = client_config("route.upstream_ca", Some(&garbage))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("route.upstream_ca") && e.contains("no certificate"),
            "{e}"
        );

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.path().join("cert.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        let e = server_config(
            "gateway.tls",
            &TlsConfig {
                cert: cert_path.clone(),
                key: garbage,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("gateway.tls.key:"), "{e}");
        // The error never quotes key material.
        let key_path = dir.path().join("key.pem");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        let other_cert = dir.path().join("other.pem");
        std::fs::write(&other_cert, other.cert.pem()).unwrap();
        let e = server_config(
            "gateway.tls",
            &TlsConfig {
                cert: other_cert,
                key: key_path.clone(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("do not make a usable pair"), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        server_config(
            "gateway.tls",
            &TlsConfig {
                cert: cert_path.clone(),
                key: key_path,
            },
        )
        .unwrap();
        client_config("route.upstream_ca", Some(&cert_path)).unwrap();
    }
}
