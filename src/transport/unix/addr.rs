//! Unix socket addresses ([`UnixAddr`]) and the socket files that binding
//! a path creates: the stale-file check and removal rules described in the
//! [`unix` module docs](super).

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::reactor::would_block;
use crate::transport::SocketAddress;

/// The address of a Unix-domain socket: a path in the file system, or
/// (Linux) a name in the abstract namespace.
///
/// ```
/// use protoloop::UnixAddr;
/// let a: UnixAddr = "/tmp/bank.sock".into();
/// let b = UnixAddr::abstract_name("bank");
/// assert_eq!(a.to_string(), "/tmp/bank.sock");
/// assert_eq!(b.to_string(), "@bank");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnixAddr {
    /// A socket file at this path.
    Path(PathBuf),
    /// A name in Linux's abstract namespace (no file; the leading NUL byte
    /// is not part of the name).
    Abstract(Vec<u8>),
}

impl UnixAddr {
    /// A socket file at `path`.
    pub fn path(path: impl Into<PathBuf>) -> UnixAddr {
        UnixAddr::Path(path.into())
    }

    /// A name in the abstract namespace (Linux only: using it elsewhere
    /// fails with [`Error::Unsupported`]).
    pub fn abstract_name(name: impl AsRef<[u8]>) -> UnixAddr {
        UnixAddr::Abstract(name.as_ref().to_vec())
    }

    /// The address of a socket, `None` for an unnamed one (a socket that
    /// never bound).
    pub fn from_std(addr: &std::os::unix::net::SocketAddr) -> Option<UnixAddr> {
        if let Some(p) = addr.as_pathname() {
            return Some(UnixAddr::Path(p.to_path_buf()));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            if let Some(name) = addr.as_abstract_name() {
                return Some(UnixAddr::Abstract(name.to_vec()));
            }
        }
        None
    }

    /// The standard library's form of this address.
    pub fn to_std(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        match self {
            UnixAddr::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            UnixAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            UnixAddr::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract socket names exist only on Linux",
            )),
        }
    }

    /// This address as a [`SocketAddress`] (for `DatagramTransport::sendto`).
    pub fn socket_address(&self) -> io::Result<SocketAddress> {
        self.to_std().map(SocketAddress::Unix)
    }

    pub(crate) fn to_sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            UnixAddr::Path(p) => {
                if p.as_os_str().as_bytes().first() == Some(&0) {
                    // socket2 would read a leading NUL as an abstract name.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a socket path cannot start with a NUL byte (use UnixAddr::abstract_name)",
                    ));
                }
                SockAddr::unix(p)
            }
            UnixAddr::Abstract(name) => {
                if cfg!(not(any(target_os = "linux", target_os = "android"))) {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "abstract socket names exist only on Linux",
                    ));
                }
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                SockAddr::unix(OsStr::from_bytes(&bytes))
            }
        }
    }

    fn file_path(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(p) => Some(p),
            UnixAddr::Abstract(_) => None,
        }
    }
}

impl fmt::Display for UnixAddr {
    /// A path as itself; an abstract name as `@name`, as `ss` shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

impl From<&str> for UnixAddr {
    fn from(p: &str) -> Self {
        UnixAddr::Path(p.into())
    }
}
impl From<String> for UnixAddr {
    fn from(p: String) -> Self {
        UnixAddr::Path(p.into())
    }
}
impl From<&Path> for UnixAddr {
    fn from(p: &Path) -> Self {
        UnixAddr::Path(p.into())
    }
}
impl From<PathBuf> for UnixAddr {
    fn from(p: PathBuf) -> Self {
        UnixAddr::Path(p)
    }
}
impl From<&PathBuf> for UnixAddr {
    fn from(p: &PathBuf) -> Self {
        UnixAddr::Path(p.clone())
    }
}

impl From<std::os::unix::net::SocketAddr> for SocketAddress {
    fn from(a: std::os::unix::net::SocketAddr) -> Self {
        SocketAddress::Unix(a)
    }
}

/// The socket file a bound socket made, identified by device and inode so
/// that a file someone else put at the same path later is left alone.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The file now at `path`, if it is a socket.
    pub(crate) fn at(path: &Path) -> Option<SocketFile> {
        let m = std::fs::symlink_metadata(path).ok()?;
        m.file_type().is_socket().then(|| SocketFile {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Remove the file if it is still the one we made.
    pub(crate) fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.dev() == self.dev
            && m.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the socket file at `path` is stale: a socket file that no
/// socket of type `ty` listens on. Only `ECONNREFUSED` counts as stale;
/// a connection (or a full backlog, or a socket of another type) is a live
/// server, and anything else is an error.
fn is_stale(path: &Path, ty: Type) -> io::Result<bool> {
    let m = std::fs::symlink_metadata(path)?;
    if !m.file_type().is_socket() {
        return Ok(false);
    }
    let probe = Socket::new(Domain::UNIX, ty, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(true),
        Err(e)
            if would_block(&e)
                || e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error())
                || e.raw_os_error() == Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Make a Unix socket of type `ty` bound to `addr`. With `remove_stale`,
/// a stale socket file in the way is removed first (see the [`unix` module docs](super)).
/// Returns the socket and the file it made, if any.
pub(crate) fn bind_unix(
    addr: &UnixAddr,
    ty: Type,
    remove_stale: bool,
) -> Result<(Socket, Option<SocketFile>)> {
    let ctx = || format!("binding {addr}");
    let sa = addr.to_sockaddr().map_err(|e| Error::io(ctx(), e))?;
    let sock = Socket::new(Domain::UNIX, ty, None).map_err(|e| Error::io(ctx(), e))?;
    match sock.bind(&sa) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let Some(path) = addr.file_path() else {
                return Err(Error::io(
                    ctx(),
                    io::Error::new(e.kind(), "the abstract name is in use"),
                ));
            };
            let stale = is_stale(path, ty)
                .map_err(|e| Error::io(format!("checking whether {addr} is a stale socket"), e))?;
            if !stale {
                return Err(Error::io(
                    ctx(),
                    io::Error::new(
                        e.kind(),
                        "the path is in use by a live socket or a non-socket file",
                    ),
                ));
            }
            if !remove_stale {
                return Err(Error::io(
                    ctx(),
                    io::Error::new(
                        e.kind(),
                        "a stale socket file is in the way (remove_stale would remove it)",
                    ),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing the stale socket {addr}"), e))?;
            sock.bind(&sa).map_err(|e| Error::io(ctx(), e))?;
        }
        Err(e) => return Err(Error::io(ctx(), e)),
    }
    let file = addr.file_path().and_then(SocketFile::at);
    Ok((sock, file))
}
