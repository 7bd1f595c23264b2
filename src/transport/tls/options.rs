//! The public option and result types of TLS: [`TlsClient`],
//! [`TlsServer`], [`TlsSide`], [`TlsInfo`], and the `tls` setters on the
//! connect and server options (TCP and Unix).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};

use crate::transport::Transport;
use crate::transport::tcp::{ConnectOptions, ServerOptions};
use crate::transport::unix::{UnixConnectOptions, UnixServerOptions};

/// How long a TLS handshake may take by default: 60 s, as asyncio.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the `close_notify` exchange may take by default: 30 s, as
/// asyncio.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The handshake and shutdown deadlines of a TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsTimeouts {
    pub(crate) handshake: Duration,
    pub(crate) shutdown: Duration,
}

impl Default for TlsTimeouts {
    fn default() -> Self {
        TlsTimeouts {
            handshake: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// The client side of TLS: a rustls configuration, the name the server's
/// certificate must be valid for (also sent as SNI), and the timeouts.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use rustls::pki_types::ServerName;
/// let config = Arc::new(protoloop::tls::dangerous_client_config_without_verification());
/// let client = protoloop::tls::TlsClient::new(config, ServerName::try_from("example.com").unwrap())
///     .handshake_timeout(Duration::from_secs(5));
/// let opts = protoloop::ConnectOptions::default().tls_client(client);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) timeouts: TlsTimeouts,
}

impl TlsClient {
    /// Connect to `server_name` with `config`; default timeouts.
    pub fn new(config: Arc<ClientConfig>, server_name: ServerName<'static>) -> TlsClient {
        TlsClient {
            config,
            server_name,
            timeouts: TlsTimeouts::default(),
        }
    }

    /// Fail the handshake if it takes longer (default 60 s).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.timeouts.handshake = t;
        self
    }

    /// Reset the connection if closing takes longer (default 30 s).
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.timeouts.shutdown = t;
        self
    }
}

/// The server side of TLS: a rustls configuration and the timeouts.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use rustls::pki_types::PrivateKeyDer;
/// let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
/// let config = protoloop::tls::server_config(vec![c.cert.der().clone()], key).unwrap();
/// let server = protoloop::tls::TlsServer::new(Arc::new(config))
///     .shutdown_timeout(Duration::from_secs(2));
/// let opts = protoloop::ServerOptions::default().tls_server(server);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct TlsServer {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) timeouts: TlsTimeouts,
}

impl TlsServer {
    /// Serve with `config`; default timeouts.
    pub fn new(config: Arc<ServerConfig>) -> TlsServer {
        TlsServer {
            config,
            timeouts: TlsTimeouts::default(),
        }
    }

    /// Drop a client whose handshake takes longer (default 60 s).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.timeouts.handshake = t;
        self
    }

    /// Reset the connection if closing takes longer (default 30 s).
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.timeouts.shutdown = t;
        self
    }
}

/// Which end of the handshake [`start_tls`](super::start_tls) plays.
#[derive(Debug, Clone)]
pub enum TlsSide {
    /// Act as the TLS client.
    Client(TlsClient),
    /// Act as the TLS server.
    Server(TlsServer),
}

impl TlsSide {
    pub(super) fn timeouts(&self) -> TlsTimeouts {
        match self {
            TlsSide::Client(c) => c.timeouts,
            TlsSide::Server(s) => s.timeouts,
        }
    }
}

impl From<TlsClient> for TlsSide {
    fn from(c: TlsClient) -> Self {
        TlsSide::Client(c)
    }
}

impl From<TlsServer> for TlsSide {
    fn from(s: TlsServer) -> Self {
        TlsSide::Server(s)
    }
}

/// What a completed handshake negotiated: [`Transport::tls_info`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The TLS version, e.g. `TLSv1_3`.
    pub protocol_version: rustls::ProtocolVersion,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: rustls::CipherSuite,
    /// The protocol agreed through ALPN, if any.
    pub alpn_protocol: Option<Vec<u8>>,
    /// The peer's certificate chain, leaf first: the server's on a client;
    /// the client's on a server that asked for one (empty otherwise).
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// On a server, the host name the client asked for (SNI); `None` on a
    /// client or when the client sent none.
    pub server_name: Option<String>,
    /// `true` on the server end.
    pub is_server: bool,
}

impl Transport {
    /// What the TLS handshake negotiated, if this is a TLS transport whose
    /// handshake completed (the typed form of `extra("tls")`).
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.extra("tls")
            .and_then(|b| b.downcast::<TlsInfo>().ok())
            .map(|b| *b)
    }
}

impl ConnectOptions {
    /// Speak TLS on the connection: verify the server's certificate with
    /// `config` against `server_name` (also sent as SNI). The protocol's
    /// `connection_made` comes after the handshake; see the
    /// [`tls`](crate::tls) module.
    pub fn tls(self, config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        self.tls_client(TlsClient::new(config, server_name))
    }

    /// Like [`tls`](Self::tls), with the timeouts set on `client`.
    pub fn tls_client(mut self, client: TlsClient) -> Self {
        self.tls = Some(client);
        self
    }
}

impl ServerOptions {
    /// Speak TLS on every accepted connection, with `config`. The
    /// protocol's `connection_made` comes after the handshake; see the
    /// [`tls`](crate::tls) module.
    pub fn tls(self, config: Arc<ServerConfig>) -> Self {
        self.tls_server(TlsServer::new(config))
    }

    /// Like [`tls`](Self::tls), with the timeouts set on `server`.
    pub fn tls_server(mut self, server: TlsServer) -> Self {
        self.tls = Some(server);
        self
    }
}

impl UnixConnectOptions {
    /// Speak TLS on the Unix connection, as [`ConnectOptions::tls`] does
    /// over TCP: verify the server's certificate with `config` against
    /// `server_name` (also sent as SNI).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rustls::pki_types::ServerName;
    /// let config = Arc::new(protoloop::tls::dangerous_client_config_without_verification());
    /// let opts = protoloop::UnixConnectOptions::default()
    ///     .tls(config, ServerName::try_from("localhost").unwrap());
    /// # let _ = opts;
    /// ```
    pub fn tls(self, config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Self {
        self.tls_client(TlsClient::new(config, server_name))
    }

    /// Like [`tls`](Self::tls), with the timeouts set on `client`.
    pub fn tls_client(mut self, client: TlsClient) -> Self {
        self.tls = Some(client);
        self
    }
}

impl UnixServerOptions {
    /// Speak TLS on every accepted Unix connection, with `config`, as
    /// [`ServerOptions::tls`] does over TCP.
    pub fn tls(self, config: Arc<ServerConfig>) -> Self {
        self.tls_server(TlsServer::new(config))
    }

    /// Like [`tls`](Self::tls), with the timeouts set on `server`.
    pub fn tls_server(mut self, server: TlsServer) -> Self {
        self.tls = Some(server);
        self
    }
}
