//! [`Correlator`]: which reply belongs to which call, as a plain state
//! machine. It is fed calls, replies, cancellations, the time and the
//! connection's fate, and answers with call ids; it never touches a socket
//! or a clock, so every rule below is unit-tested without either.
//!
//! # A call's life
//!
//! ```text
//!            submit                 next_to_send            on_reply
//!  (none) ----------> Queued ----------------------> InFlight -------> done
//!                       |                               |
//!              cancel / | expire            cancel /    | expire
//!                       v                               v
//!                     done       (reply still due) Abandoned --on_reply--> done
//! ```
//!
//! A call that was sent and then cancelled or timed out is *abandoned*:
//! it no longer counts as in flight, neither in [`Correlator::in_flight`]
//! nor against the cap, so calls that time out on a server that never
//! answers them cannot wedge the client. Its reply may still come, and
//! must not reach another caller:
//!
//! - FIFO and by key: the reply's place in line is kept (counted by
//!   [`Correlator::abandoned`]), and the reply is consumed and thrown away
//!   ([`Delivery::Abandoned`]); otherwise every later reply would go to
//!   the wrong caller.
//! - By id: nothing is kept, since the id says whose a reply is. A reply
//!   bearing an id this correlator gave out but no call is waiting for
//!   (abandoned, or answered already) is thrown away the same way; only
//!   an id never given out, or one of a call not yet sent, is an error.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

use rustc_hash::FxHashMap;

/// How replies are matched to calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Correlation {
    /// Replies come in request order: the ATM demo's wire, which carries
    /// no ids. The default.
    #[default]
    Fifo,
    /// Each reply carries a key its request had too (the bank `Response`
    /// carries the `customer_id`). Replies for one key come in the order of
    /// its requests; different keys may be answered in any order.
    ByKey,
    /// Each request is sent in an envelope with an id, which the server
    /// copies into its reply: any order.
    ById,
}

/// Names one call; ids grow from 0 and are never reused by a correlator.
/// In [`Correlation::ById`] it is also the id on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a reply carries to match it: nothing, a key, or an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTag<K> {
    /// Nothing: the oldest call in flight ([`Correlation::Fifo`]).
    Next,
    /// The reply's key ([`Correlation::ByKey`]).
    Key(K),
    /// The id from the reply's envelope ([`Correlation::ById`]).
    Id(u64),
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To the caller of this call.
    Call(CallId),
    /// Nowhere: it answers this call, which was cancelled or timed out
    /// after it was sent (or, by id, was answered already). Throw the
    /// reply away.
    Abandoned(CallId),
}

/// What [`Correlator::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The call was never sent; it is gone without a trace on the wire.
    Unsent,
    /// The call was sent; its reply will be consumed and thrown away.
    Abandoned,
    /// No such live call (already answered, failed or cancelled).
    Unknown,
}

/// A reply that matches no call: the peer broke the protocol. The
/// connection should be closed with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorrelationError {
    /// A reply arrived with no call in flight.
    NoCallInFlight,
    /// A keyed reply whose key no call in flight has.
    UnknownKey {
        /// The reply's key, as `Debug` shows it.
        key: String,
        /// Replies due at the time: calls in flight, and abandoned ones.
        in_flight: usize,
    },
    /// An enveloped reply whose id no call in flight has.
    UnknownId {
        /// The reply's id.
        id: u64,
    },
    /// The reply was tagged for another mode than the correlator's.
    WrongTag {
        /// The correlator's mode.
        expected: Correlation,
        /// The tag that came.
        got: &'static str,
    },
}

impl fmt::Display for CorrelationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorrelationError::NoCallInFlight => {
                f.write_str("unexpected reply: expected none (no call in flight), got one")
            }
            CorrelationError::UnknownKey { key, in_flight } => write!(
                f,
                "unexpected reply: expected a key of one of {in_flight} calls in flight, got {key}"
            ),
            CorrelationError::UnknownId { id } => write!(
                f,
                "unexpected reply: expected the id of a call in flight, got {id}"
            ),
            CorrelationError::WrongTag { expected, got } => write!(
                f,
                "reply tag mismatch: expected one for {expected:?} correlation, got {got}"
            ),
        }
    }
}

impl std::error::Error for CorrelationError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Queued,
    InFlight,
    Abandoned,
}

#[derive(Debug)]
struct Entry<K> {
    stage: Stage,
    key: Option<K>,
}

/// Matches replies to calls; see the [module docs](self).
///
/// ```
/// use protoloop::rpc::correlator::{Correlation, Correlator, Delivery, ReplyTag};
///
/// let mut c = Correlator::<String>::new(Correlation::Fifo);
/// let a = c.submit(None, None);
/// let b = c.submit(None, None);
/// assert_eq!(c.next_to_send(), Some(a));
/// assert_eq!(c.next_to_send(), Some(b));
/// c.cancel(a); // its reply is still due, and still consumed
/// assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Abandoned(a)));
/// assert_eq!(c.on_reply(ReplyTag::Next), Ok(Delivery::Call(b)));
/// ```
#[derive(Debug)]
pub struct Correlator<K = String> {
    mode: Correlation,
    max_in_flight: usize,
    write_paused: bool,
    next_id: u64,
    /// Our own sequential ids: FxHash, not SipHash, which was a tenth of
    /// the RPC client's CPU. A peer's forged id is only ever looked up.
    entries: FxHashMap<CallId, Entry<K>>,
    /// Calls waiting to be sent, oldest first; cancelled ones are skipped.
    queue: VecDeque<CallId>,
    queued: usize,
    /// Fifo: calls in flight (abandoned ones included), oldest first.
    fifo: VecDeque<CallId>,
    /// ByKey: calls in flight per key, oldest first.
    keyed: HashMap<K, VecDeque<CallId>>,
    /// Sent calls whose caller still waits for the reply.
    in_flight: usize,
    /// Sent calls given up on whose reply is still due (FIFO and by key).
    abandoned: usize,
    /// Deadlines; entries of calls that are done are dropped lazily.
    deadlines: BinaryHeap<Reverse<(Instant, CallId)>>,
}

impl<K: Hash + Eq + Clone + fmt::Debug> Correlator<K> {
    /// A correlator with no cap on calls in flight.
    pub fn new(mode: Correlation) -> Self {
        Correlator {
            mode,
            max_in_flight: usize::MAX,
            write_paused: false,
            next_id: 0,
            entries: FxHashMap::default(),
            queue: VecDeque::new(),
            queued: 0,
            fifo: VecDeque::new(),
            keyed: HashMap::new(),
            in_flight: 0,
            abandoned: 0,
            deadlines: BinaryHeap::new(),
        }
    }

    /// Send at most `max` calls before their replies come (at least 1).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// The correlation mode.
    pub fn mode(&self) -> Correlation {
        self.mode
    }

    /// Queue a call. `key` is the request's key, needed (and only used)
    /// with [`Correlation::ByKey`]; `deadline` is when it times out.
    ///
    /// # Panics
    ///
    /// With [`Correlation::ByKey`] and no key.
    pub fn submit(&mut self, key: Option<K>, deadline: Option<Instant>) -> CallId {
        assert!(
            key.is_some() || self.mode != Correlation::ByKey,
            "ByKey correlation needs each request's key"
        );
        let id = CallId(self.next_id);
        self.next_id += 1;
        let key = if self.mode == Correlation::ByKey {
            key
        } else {
            None
        };
        self.entries.insert(
            id,
            Entry {
                stage: Stage::Queued,
                key,
            },
        );
        self.queue.push_back(id);
        self.queued += 1;
        if let Some(d) = deadline {
            self.deadlines.push(Reverse((d, id)));
        }
        id
    }

    /// Tell whether the transport is paused for writing; while it is, no
    /// call is released.
    pub fn set_write_paused(&mut self, paused: bool) {
        self.write_paused = paused;
    }

    /// `true` if [`next_to_send`](Self::next_to_send) would release a call
    /// if one were queued.
    pub fn can_send(&self) -> bool {
        !self.write_paused && self.in_flight < self.max_in_flight
    }

    /// The next call to put on the wire, now in flight; `None` if none is
    /// queued, the cap is reached or writing is paused.
    pub fn next_to_send(&mut self) -> Option<CallId> {
        if !self.can_send() {
            return None;
        }
        while let Some(id) = self.queue.pop_front() {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue; // cancelled or expired while queued
            };
            debug_assert_eq!(entry.stage, Stage::Queued);
            entry.stage = Stage::InFlight;
            self.queued -= 1;
            self.in_flight += 1;
            match self.mode {
                Correlation::Fifo => self.fifo.push_back(id),
                Correlation::ByKey => {
                    let key = entry.key.clone().expect("submit checked");
                    self.keyed.entry(key).or_default().push_back(id);
                }
                Correlation::ById => {}
            }
            return Some(id);
        }
        None
    }

    /// A reply arrived: say whose it is.
    pub fn on_reply(&mut self, tag: ReplyTag<K>) -> Result<Delivery, CorrelationError> {
        let id = match (self.mode, tag) {
            (Correlation::Fifo, ReplyTag::Next) => self
                .fifo
                .pop_front()
                .ok_or(CorrelationError::NoCallInFlight)?,
            (Correlation::ByKey, ReplyTag::Key(key)) => {
                let Some(q) = self.keyed.get_mut(&key) else {
                    return Err(self.unknown_key(&key));
                };
                let id = q.pop_front().expect("empty queues are removed");
                if q.is_empty() {
                    self.keyed.remove(&key);
                }
                id
            }
            (Correlation::ById, ReplyTag::Id(raw)) => {
                let id = CallId(raw);
                match self.entries.get(&id) {
                    Some(e) if e.stage == Stage::InFlight => id,
                    // Given out, and no longer waited for: see the module
                    // docs.
                    None if raw < self.next_id => return Ok(Delivery::Abandoned(id)),
                    _ => return Err(CorrelationError::UnknownId { id: raw }),
                }
            }
            (mode, tag) => {
                return Err(CorrelationError::WrongTag {
                    expected: mode,
                    got: match tag {
                        ReplyTag::Next => "an untagged reply",
                        ReplyTag::Key(_) => "a keyed reply",
                        ReplyTag::Id(_) => "an enveloped reply",
                    },
                });
            }
        };
        let entry = self
            .entries
            .remove(&id)
            .expect("in-flight calls have entries");
        Ok(match entry.stage {
            Stage::InFlight => {
                self.in_flight -= 1;
                Delivery::Call(id)
            }
            Stage::Abandoned => {
                self.abandoned -= 1;
                Delivery::Abandoned(id)
            }
            Stage::Queued => unreachable!("queued calls are not in flight"),
        })
    }

    fn unknown_key(&self, key: &K) -> CorrelationError {
        let due = self.in_flight + self.abandoned;
        if due == 0 {
            CorrelationError::NoCallInFlight
        } else {
            CorrelationError::UnknownKey {
                key: format!("{key:?}"),
                in_flight: due,
            }
        }
    }

    /// The caller gave up on `id` (dropped its future). A sent call stops
    /// counting as in flight at once.
    pub fn cancel(&mut self, id: CallId) -> Cancelled {
        match self.entries.get_mut(&id) {
            None => Cancelled::Unknown,
            Some(e) if e.stage == Stage::Abandoned => Cancelled::Unknown,
            Some(e) if e.stage == Stage::InFlight => {
                self.in_flight -= 1;
                if self.mode == Correlation::ById {
                    self.entries.remove(&id);
                } else {
                    e.stage = Stage::Abandoned;
                    self.abandoned += 1;
                }
                Cancelled::Abandoned
            }
            Some(_) => {
                self.entries.remove(&id);
                self.queued -= 1;
                Cancelled::Unsent
            }
        }
    }

    /// The earliest deadline of a live call.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((when, id))) = self.deadlines.peek().copied() {
            if self.is_live(id) {
                return Some(when);
            }
            self.deadlines.pop();
        }
        None
    }

    fn is_live(&self, id: CallId) -> bool {
        matches!(self.entries.get(&id), Some(e) if e.stage != Stage::Abandoned)
    }

    /// Time out every live call whose deadline is at or before `now`, and
    /// return them (oldest deadline first): unsent ones are dropped, sent
    /// ones abandoned.
    pub fn expire(&mut self, now: Instant) -> Vec<CallId> {
        let mut out = Vec::new();
        while let Some(Reverse((when, id))) = self.deadlines.peek().copied() {
            if when > now {
                break;
            }
            self.deadlines.pop();
            if self.is_live(id) {
                self.cancel(id);
                out.push(id);
            }
        }
        out
    }

    /// The connection is gone: every call in flight has failed, and so has
    /// every queued one unless `keep_unsent` (a reconnect will send them).
    /// Returns the failed calls, oldest first. Abandoned calls are simply
    /// forgotten, and the in-flight count starts again from zero.
    pub fn connection_lost(&mut self, keep_unsent: bool) -> Vec<CallId> {
        let mut failed: Vec<CallId> = self
            .entries
            .iter()
            .filter(|(_, e)| match e.stage {
                Stage::InFlight => true,
                Stage::Queued => !keep_unsent,
                Stage::Abandoned => false,
            })
            .map(|(id, _)| *id)
            .collect();
        failed.sort();
        self.entries
            .retain(|_, e| keep_unsent && e.stage == Stage::Queued);
        if !keep_unsent {
            self.queue.clear();
            self.queued = 0;
        }
        self.fifo.clear();
        self.keyed.clear();
        self.in_flight = 0;
        self.abandoned = 0;
        self.write_paused = false;
        failed
    }

    /// Calls sent whose callers still wait for their replies. Abandoned
    /// calls (cancelled or timed out after they were sent) are not counted.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Calls sent and then abandoned whose replies are still due, to be
    /// thrown away when they come (FIFO and by key; always 0 by id).
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Calls waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queued
    }
}

#[cfg(test)]
#[path = "correlator_tests.rs"]
mod tests;
