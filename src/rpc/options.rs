//! [`RpcOptions`] and [`Backoff`]: how an [`RpcClient`](super::RpcClient)
//! frames, correlates, times out and reconnects.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use super::Correlation;
use crate::codec::FrameCodec;

/// The default cap on calls in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

pub(crate) type KeyFn<T> = Rc<dyn Fn(&T) -> String>;

/// How an [`RpcClient`](super::RpcClient) works. Defaults: the demo's
/// 2-byte framing, FIFO correlation, no deadline, at most
/// [`DEFAULT_MAX_IN_FLIGHT`] calls in flight, no reconnect.
///
/// ```
/// use std::time::Duration;
/// use protoloop::proto::bank::{GetBalance, Response};
/// use protoloop::rpc::RpcOptions;
///
/// let opts = RpcOptions::<GetBalance, Response>::new()
///     .by_key(|req| req.customer_id.clone(), |resp| resp.customer_id.clone())
///     .call_timeout(Duration::from_secs(5));
/// # let _ = opts;
/// ```
pub struct RpcOptions<Req, Resp> {
    pub(crate) framing: FrameCodec,
    pub(crate) correlation: Correlation,
    pub(crate) keys: Option<(KeyFn<Req>, KeyFn<Resp>)>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) max_in_flight: usize,
    pub(crate) reconnect: Option<Backoff>,
}

impl<Req, Resp> Clone for RpcOptions<Req, Resp> {
    fn clone(&self) -> Self {
        RpcOptions {
            framing: self.framing.clone(),
            correlation: self.correlation,
            keys: self.keys.clone(),
            call_timeout: self.call_timeout,
            max_in_flight: self.max_in_flight,
            reconnect: self.reconnect,
        }
    }
}

impl<Req, Resp> fmt::Debug for RpcOptions<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcOptions")
            .field("framing", &self.framing)
            .field("correlation", &self.correlation)
            .field("call_timeout", &self.call_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

impl<Req, Resp> Default for RpcOptions<Req, Resp> {
    fn default() -> Self {
        RpcOptions {
            framing: FrameCodec::new(),
            correlation: Correlation::Fifo,
            keys: None,
            call_timeout: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            reconnect: None,
        }
    }
}

impl<Req, Resp> RpcOptions<Req, Resp> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The framing (default: the demo's 2-byte big-endian length).
    ///
    /// ```
    /// use protoloop::codec::{FrameCodec, LengthPrefix};
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let opts = protoloop::rpc::RpcOptions::<AddRequest, AddReply>::new()
    ///     .framing(FrameCodec::builder().length_prefix(LengthPrefix::Varint).build());
    /// # let _ = opts;
    /// ```
    pub fn framing(mut self, framing: FrameCodec) -> Self {
        self.framing = framing;
        self
    }

    /// Replies come in request order (the default).
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let opts = protoloop::rpc::RpcOptions::<AddRequest, AddReply>::new().fifo();
    /// # let _ = opts;
    /// ```
    pub fn fifo(mut self) -> Self {
        self.correlation = Correlation::Fifo;
        self.keys = None;
        self
    }

    /// Match each reply to the oldest call in flight with the same key:
    /// `request_key` takes it from a request, `reply_key` from a reply.
    /// Replies for different keys may come in any order.
    ///
    /// ```
    /// use protoloop::proto::bank::{GetBalance, Response};
    /// let opts = protoloop::rpc::RpcOptions::<GetBalance, Response>::new()
    ///     .by_key(|req| req.customer_id.clone(), |resp| resp.customer_id.clone());
    /// # let _ = opts;
    /// ```
    pub fn by_key(
        mut self,
        request_key: impl Fn(&Req) -> String + 'static,
        reply_key: impl Fn(&Resp) -> String + 'static,
    ) -> Self {
        self.correlation = Correlation::ByKey;
        self.keys = Some((Rc::new(request_key), Rc::new(reply_key)));
        self
    }

    /// Wrap each request in an [`Envelope`](crate::proto::rpc::Envelope)
    /// with an id that the server copies into its reply, so it may answer
    /// in any order. The server must speak it too
    /// ([`Service::with_ids`](super::Service::with_ids)).
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let opts = protoloop::rpc::RpcOptions::<AddRequest, AddReply>::new().with_ids();
    /// # let _ = opts;
    /// ```
    pub fn with_ids(mut self) -> Self {
        self.correlation = Correlation::ById;
        self.keys = None;
        self
    }

    /// Fail each call that has no reply this long after
    /// [`call`](super::RpcClient::call) (default: wait for ever).
    ///
    /// ```
    /// use std::time::Duration;
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let opts = protoloop::rpc::RpcOptions::<AddRequest, AddReply>::new()
    ///     .call_timeout(Duration::from_secs(2));
    /// # let _ = opts;
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Send at most `max` calls before their replies come; later calls
    /// wait their turn (at least 1; default [`DEFAULT_MAX_IN_FLIGHT`]). A
    /// call that times out or is cancelled after it was sent gives its
    /// place back at once, so a server that never answers some calls
    /// cannot wedge the client.
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// let opts = protoloop::rpc::RpcOptions::<AddRequest, AddReply>::new().max_in_flight(1);
    /// # let _ = opts;
    /// ```
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Reconnect when the connection is lost, waiting as `backoff` says
    /// between attempts (default: don't). Calls in flight when it is lost
    /// still fail; calls not yet sent wait for the new connection.
    ///
    /// ```
    /// use protoloop::proto::adder::{AddReply, AddRequest};
    /// use protoloop::rpc::Backoff;
    /// let opts = protoloop::rpc::RpcOptions::<AddRequest, AddReply>::new()
    ///     .reconnect(Backoff::default().max_attempts(5));
    /// # let _ = opts;
    /// ```
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = Some(backoff);
        self
    }
}

/// How long to wait between reconnection attempts: `initial`, then
/// multiplied by `factor` after each failure, up to `max`; giving up after
/// `max_attempts` if set. Defaults: 100 ms, ×2, at most 10 s, for ever.
///
/// ```
/// use std::time::Duration;
/// use protoloop::rpc::Backoff;
/// let b = Backoff::default().max(Duration::from_millis(350)).max_attempts(4);
/// let ms: Vec<u128> = b.delays().map(|d| d.as_millis()).collect();
/// assert_eq!(ms, [100, 200, 350, 350]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The wait before the first attempt (default 100 ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = protoloop::rpc::Backoff::default().initial(Duration::ZERO);
    /// assert_eq!(b.delays().next(), Some(Duration::ZERO));
    /// ```
    pub fn initial(mut self, wait: Duration) -> Self {
        self.initial = wait;
        self
    }

    /// The longest wait (default 10 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = protoloop::rpc::Backoff::default().max(Duration::from_millis(150));
    /// assert_eq!(b.delays().nth(5), Some(Duration::from_millis(150)));
    /// ```
    pub fn max(mut self, wait: Duration) -> Self {
        self.max = wait;
        self
    }

    /// How much longer each wait is than the one before (default 2; values
    /// below 1 are taken as 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = protoloop::rpc::Backoff::default().factor(3.0);
    /// assert_eq!(b.delays().nth(1), Some(Duration::from_millis(300)));
    /// ```
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_nan() {
            1.0
        } else {
            factor.max(1.0)
        };
        self
    }

    /// Give up after this many failed attempts (default: never).
    ///
    /// ```
    /// let b = protoloop::rpc::Backoff::default().max_attempts(3);
    /// assert_eq!(b.delays().count(), 3);
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The waits before each attempt, in order (endless without
    /// `max_attempts`).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let me = *self;
        let mut next = me.initial.min(me.max);
        let mut attempt = 0u32;
        std::iter::from_fn(move || {
            if me.max_attempts.is_some_and(|n| attempt >= n) {
                return None;
            }
            attempt = attempt.saturating_add(1);
            let now = next;
            next = Duration::try_from_secs_f64(next.as_secs_f64() * me.factor)
                .map_or(me.max, |d| d.min(me.max));
            Some(now)
        })
    }
}
