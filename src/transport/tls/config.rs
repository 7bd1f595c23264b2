//! Helpers that build rustls configurations the way this crate wants
//! them (the `ring` provider passed explicitly, so two providers in one
//! dependency tree never make rustls panic; TLS 1.2 and 1.3; verification
//! on) and read certificates and keys from PEM.
//!
//! The configurations are plain rustls values: set `alpn_protocols` (or
//! anything else) on them before wrapping them in an `Arc`.
//!
//! Turning certificate verification off takes the explicitly named
//! [`dangerous_client_config_without_verification`].

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::{Error, Result};

/// The crypto provider every helper here uses: rustls's `ring` provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store.add(cert).map_err(Error::Tls)?;
    }
    if store.is_empty() {
        return Err(Error::Tls(rustls::Error::General(
            "no trusted root certificate given".into(),
        )));
    }
    Ok(store)
}

/// A client configuration that trusts exactly the certificates in `roots`
/// (usually one CA certificate) and verifies the server's certificate and
/// host name against them. No client certificate is sent.
///
/// ```
/// let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let config = protoloop::tls::client_config([ca.cert.der().clone()]).unwrap();
/// assert!(config.alpn_protocols.is_empty());
/// ```
pub fn client_config(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<ClientConfig> {
    let store = root_store(roots)?;
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(store)
        .with_no_client_auth())
}

/// Like [`client_config`], and presents `cert_chain` (leaf first) with
/// its private key when the server asks for a client certificate
/// (mutual TLS).
pub fn client_config_with_certificate(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig> {
    let store = root_store(roots)?;
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(store)
        .with_client_auth_cert(cert_chain, key)
        .map_err(Error::Tls)
}

/// A client configuration that accepts **any** server certificate for
/// **any** name: the connection is encrypted but not authenticated, so
/// anyone on the path can read and change it. For tests and for talking
/// to a known host whose certificate cannot be checked; never the default.
/// Handshake signatures are still checked, so the peer must hold the key
/// of the certificate it shows.
pub fn dangerous_client_config_without_verification() -> ClientConfig {
    let provider = crypto_provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)));
    config
}

#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server configuration presenting `cert_chain` (leaf first) with its
/// private key; clients are not asked for a certificate.
///
/// ```
/// use rustls::pki_types::PrivateKeyDer;
/// let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
/// let config = protoloop::tls::server_config(vec![c.cert.der().clone()], key).unwrap();
/// # let _ = config;
/// ```
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig> {
    ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(Error::Tls)
}

/// A server configuration for mutual TLS: clients are asked for a
/// certificate issued by one of `client_roots`. With `required` a client
/// without one fails the handshake; without it, anonymous clients are let
/// in (check [`TlsInfo::peer_certificates`](super::TlsInfo)).
pub fn server_config_with_client_auth(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: impl IntoIterator<Item = CertificateDer<'static>>,
    required: bool,
) -> Result<ServerConfig> {
    let provider = crypto_provider();
    let mut builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(client_roots)?),
        provider.clone(),
    );
    if !required {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))?;
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)
        .map_err(Error::Tls)
}

fn pem_error(what: String, e: rustls::pki_types::pem::Error) -> Error {
    let source = match e {
        rustls::pki_types::pem::Error::Io(io) => io,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    };
    Error::io(what, source)
}

/// Every certificate in a PEM file, in file order. A file with none is an
/// error.
pub fn load_certificates(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let what = || format!("reading certificates from {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what(), e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what(), e))?;
    if certs.is_empty() {
        return Err(Error::io(
            what(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no CERTIFICATE block"),
        ));
    }
    Ok(certs)
}

/// Every certificate in PEM text, in order. Text with none is an error.
///
/// ```
/// let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let certs = protoloop::tls::certificates_from_pem(c.cert.pem().as_bytes()).unwrap();
/// assert_eq!(certs[0], *c.cert.der());
/// assert!(protoloop::tls::certificates_from_pem(b"nothing here").is_err());
/// ```
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let what = || "reading certificates from PEM text".to_string();
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what(), e))?;
    if certs.is_empty() {
        return Err(Error::io(
            what(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no CERTIFICATE block"),
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| pem_error(format!("reading a private key from {}", path.display()), e))
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in PEM text.
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| pem_error("reading a private key from PEM text".into(), e))
}
