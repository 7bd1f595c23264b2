//! The workloads: what each measures, its key on the command line, its
//! title in the report, and which server `--app` it needs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `conns` connections echoing `size`-byte messages.
    Echo {
        key: &'static str,
        conns: usize,
        size: usize,
    },
    /// Memory per idle connection.
    Idle,
    /// `conns` connections keeping `depth` protobuf requests in flight.
    Rpc {
        key: &'static str,
        conns: usize,
        depth: usize,
    },
    /// The same through each peer's client against the raw mio server:
    /// the client thread's CPU per request.
    Client {
        key: &'static str,
        conns: usize,
        depth: usize,
    },
    /// The fourth set: TLS echo and handshakes, UDP echo, echo through a
    /// child's pipes (`servers_more.rs`).
    More {
        key: &'static str,
        kind: More,
        conns: usize,
        size: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum More {
    TlsEcho,
    TlsHandshake,
    Udp,
    Pipe,
}

impl More {
    /// The server's `--app`.
    pub fn app(self) -> &'static str {
        match self {
            More::TlsEcho | More::TlsHandshake => "tls",
            More::Udp => "udp",
            More::Pipe => "pipe",
        }
    }
}

impl Workload {
    pub const ALL: [Workload; 17] = [
        Workload::Echo {
            key: "echo1k",
            conns: 10,
            size: 1024,
        },
        Workload::Echo {
            key: "echo10k",
            conns: 10,
            size: 10 * 1024,
        },
        Workload::Echo {
            key: "echo100k",
            conns: 10,
            size: 100 * 1024,
        },
        Workload::Echo {
            key: "pingpong",
            conns: 1,
            size: 1024,
        },
        Workload::Idle,
        Workload::Rpc {
            key: "rpc1x10",
            conns: 10,
            depth: 1,
        },
        Workload::Rpc {
            key: "rpc32x10",
            conns: 10,
            depth: 32,
        },
        Workload::Rpc {
            key: "rpc1x100",
            conns: 100,
            depth: 1,
        },
        Workload::Rpc {
            key: "rpc32x100",
            conns: 100,
            depth: 32,
        },
        Workload::Client {
            key: "client1x10",
            conns: 10,
            depth: 1,
        },
        Workload::Client {
            key: "client32x10",
            conns: 10,
            depth: 32,
        },
        Workload::Client {
            key: "client1x100",
            conns: 100,
            depth: 1,
        },
        Workload::Client {
            key: "client32x100",
            conns: 100,
            depth: 32,
        },
        Workload::More {
            key: "tls10k",
            kind: More::TlsEcho,
            conns: 10,
            size: 10 * 1024,
        },
        Workload::More {
            key: "tlshs",
            kind: More::TlsHandshake,
            conns: 10,
            size: 1,
        },
        Workload::More {
            key: "udp1k",
            kind: More::Udp,
            conns: 10,
            size: 1024,
        },
        Workload::More {
            key: "pipe64k",
            kind: More::Pipe,
            conns: 1,
            size: 64 * 1024,
        },
    ];

    /// What `--quick` runs: every server and client code path once.
    pub const QUICK: [&'static str; 12] = [
        "echo1k",
        "echo100k",
        "pingpong",
        "idle",
        "rpc1x10",
        "rpc32x100",
        "client1x10",
        "client32x100",
        "tls10k",
        "tlshs",
        "udp1k",
        "pipe64k",
    ];

    pub fn parse(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.key() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Workload::ALL.iter().map(|w| w.key()).collect();
                format!("unknown workload {s:?}: expected one of {}", all.join(", "))
            })
    }

    pub fn key(self) -> &'static str {
        match self {
            Workload::Echo { key, .. }
            | Workload::Rpc { key, .. }
            | Workload::Client { key, .. }
            | Workload::More { key, .. } => key,
            Workload::Idle => "idle",
        }
    }

    pub fn label(self, idle_conns: usize) -> String {
        match self {
            Workload::Echo { conns: 1, size, .. } => {
                format!("ping-pong: echo {} KiB, 1 connection", size / 1024)
            }
            Workload::Echo { conns, size, .. } => {
                format!("echo {} KiB, {conns} connections", size / 1024)
            }
            Workload::Idle => format!("{idle_conns} idle connections"),
            Workload::Rpc { conns, depth, .. } => {
                format!("protobuf GetBalance → Response, depth {depth}, {conns} connections")
            }
            Workload::Client { conns, depth, .. } => {
                format!("client: GetBalance depth {depth}, {conns} conns, raw mio server")
            }
            Workload::More {
                kind, conns, size, ..
            } => match kind {
                More::TlsEcho => format!("TLS echo {} KiB, {conns} connections", size / 1024),
                More::TlsHandshake => {
                    format!("TLS handshakes (+ 1-byte echo), {conns} clients at a time")
                }
                More::Udp => format!("UDP echo {} KiB, {conns} sockets", size / 1024),
                More::Pipe => format!(
                    "echo {} KiB through a child's pipes (`cat`), {conns} connection",
                    size / 1024
                ),
            },
        }
    }

    /// The server's `--app`.
    pub fn app(self) -> &'static str {
        match self {
            Workload::Echo { .. } | Workload::Idle => "echo",
            Workload::Rpc { .. } | Workload::Client { .. } => "rpc",
            Workload::More { kind, .. } => kind.app(),
        }
    }

    /// Protobuf request/reply, server or client side.
    pub fn is_rpc(self) -> bool {
        matches!(self, Workload::Rpc { .. } | Workload::Client { .. })
    }

    /// Measured on the client, against a fixed server.
    pub fn is_client(self) -> bool {
        matches!(self, Workload::Client { .. })
    }
}
