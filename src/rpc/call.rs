//! [`Call`]: the future of one request's reply.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::RpcError;
use super::correlator::CallId;

/// What a [`Call`] needs from its client, without the request type.
pub(crate) trait CallTarget<Resp> {
    fn poll_call(&self, id: CallId, cx: &mut Context<'_>) -> Poll<Result<Resp, RpcError>>;
    fn cancel_call(&self, id: CallId);
}

/// The future of one [`RpcClient::call`](super::RpcClient::call): the reply, or why there is none.
/// Dropping it cancels the call (see [`RpcClient`](super::RpcClient)).
#[must_use = "a call is cancelled when its future is dropped"]
pub struct Call<Resp> {
    target: Option<Rc<dyn CallTarget<Resp>>>,
    id: Option<CallId>,
    failed: Option<RpcError>,
}

impl<Resp> fmt::Debug for Call<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("id", &self.id)
            .field("done", &self.target.is_none())
            .finish()
    }
}

impl<Resp> Call<Resp> {
    pub(crate) fn pending(target: Rc<dyn CallTarget<Resp>>, id: CallId) -> Self {
        Call {
            target: Some(target),
            id: Some(id),
            failed: None,
        }
    }

    pub(crate) fn failed(err: RpcError) -> Self {
        Call {
            target: None,
            id: None,
            failed: Some(err),
        }
    }

    /// The call's id (also its wire id with [`RpcOptions::with_ids`](super::RpcOptions::with_ids));
    /// `None` if it failed before it was queued.
    pub fn id(&self) -> Option<CallId> {
        self.id
    }
}

impl<Resp> Future for Call<Resp> {
    type Output = Result<Resp, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(err) = self.failed.take() {
            return Poll::Ready(Err(err));
        }
        let (Some(target), Some(id)) = (self.target.as_ref(), self.id) else {
            return Poll::Ready(Err(RpcError::Closed)); // polled after completion
        };
        let r = target.poll_call(id, cx);
        if r.is_ready() {
            self.target = None;
        }
        r
    }
}

impl<Resp> Drop for Call<Resp> {
    fn drop(&mut self) {
        if let (Some(target), Some(id)) = (self.target.take(), self.id) {
            target.cancel_call(id);
        }
    }
}
