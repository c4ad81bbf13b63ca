//! The receiving end of a stream that a handler reads: the client's stream argument of a
//! streaming method, as the server engine delivers it.
//!
//! The connection's read loop [`Inbox::push`]es each stream items frame (after checking its
//! credit) and the handler's [`Stream`](super::Stream) takes items from it, granting credit back
//! as it goes. When the handler drops the stream unread, the client is told to stop sending.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::stream::Stream as FuturesStream;
use serde::de::DeserializeOwned;

use super::flow::RecvWindow;
use super::Cursor;
use crate::outbound::SharedSender;
use crate::wire;

/// What the read loop and the handler's stream share.
#[derive(Debug)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Debug)]
struct InboxState {
    frames: VecDeque<Bytes>,
    window: RecvWindow,
    /// The client ended its stream.
    ended: bool,
    /// The handler dropped its stream: frames still arriving are counted and dropped.
    dropped: bool,
    /// An item could not be decoded: the call fails with this.
    failed: Option<String>,
    waker: Option<Waker>,
}

impl Inbox {
    pub(crate) fn new(window: u32) -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                frames: VecDeque::new(),
                window: RecvWindow::new(window),
                ended: false,
                dropped: false,
                failed: None,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream items frame for this stream arrived. `Err` is a protocol violation: no credit,
    /// or items after the stream's end.
    pub(crate) fn push(&self, frame: Bytes) -> Result<(), String> {
        let mut state = self.lock();
        if state.ended {
            return Err("the client sent stream items after the end of its stream".to_owned());
        }
        state.window.receive(frame.len())?;
        if state.dropped {
            return Ok(());
        }
        state.frames.push_back(frame);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// The client ended its stream. `Err` if it had already.
    pub(crate) fn end(&self) -> Result<(), String> {
        let mut state = self.lock();
        if std::mem::replace(&mut state.ended, true) {
            return Err("the client ended its stream twice".to_owned());
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// The connection is closing: the handler's stream must not send anything more (a stop
    /// after the goaway) when it is dropped.
    pub(crate) fn close(&self) {
        self.lock().dropped = true;
    }

    /// Why the call must fail, if an item could not be decoded.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }
}

/// The handler's side of an [`Inbox`]: a stream of decoded items.
pub(crate) struct Incoming<T> {
    inbox: Arc<Inbox>,
    out: Arc<SharedSender>,
    id: u64,
    current: Option<Cursor>,
    done: bool,
    credit: CreditReturn,
    _item: PhantomData<fn() -> T>,
}

impl<T> Incoming<T> {
    pub(crate) fn new(inbox: Arc<Inbox>, out: Arc<SharedSender>, id: u64) -> Self {
        Incoming { inbox, out, id, current: None, done: false, credit: CreditReturn::default(), _item: PhantomData }
    }

    /// Grants the client what the handler took, if enough to be worth a frame.
    fn grant(&mut self, cx: &mut Context<'_>) {
        let inbox = &self.inbox;
        self.credit.poll_grant(
            cx,
            &self.out,
            self.id,
            || inbox.lock().window.take_grant(),
            |grant| inbox.lock().window.ungrant(grant),
        );
    }
}

/// The consumer's side of a stream's credit: sends what it owes in credit frames, and keeps
/// flushing the last one while the consumer polls.
#[derive(Debug, Default)]
pub(crate) struct CreditReturn {
    /// Sequence number of a credit frame queued and not yet flushed (0: none).
    unflushed: u64,
}

impl CreditReturn {
    /// Takes what is owed (`take`, from the stream's [`RecvWindow`]) and queues it as a credit
    /// frame for call `id`; gives it back (`untake`) if the transport has no room now, in which
    /// case `cx` is woken when it has.
    pub(crate) fn poll_grant(
        &mut self,
        cx: &mut Context<'_>,
        out: &SharedSender,
        id: u64,
        take: impl FnOnce() -> Option<u32>,
        untake: impl FnOnce(u32),
    ) {
        if self.unflushed != 0 && out.poll_flushed(cx, self.unflushed).is_ready() {
            self.unflushed = 0;
        }
        let Some(grant) = take() else { return };
        let mut frame = Some(wire::encode_credit(id, grant).into());
        match out.poll_enqueue(cx, &mut frame) {
            Poll::Ready(Ok(seq)) => {
                if out.poll_flushed(cx, seq).is_pending() {
                    self.unflushed = seq;
                }
            }
            // A failed connection: nobody waits for credit any more.
            Poll::Ready(Err(_)) => {}
            Poll::Pending => untake(grant),
        }
    }
}

impl<T: DeserializeOwned> FuturesStream for Incoming<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(cursor) = &mut this.current {
                if let Some(item) = cursor.next_item::<T>() {
                    match item {
                        Ok(item) => return Poll::Ready(Some(item)),
                        Err(e) => {
                            this.done = true;
                            let mut state = this.inbox.lock();
                            state.failed = Some(format!("an item of the client's stream: {e}"));
                            state.dropped = true;
                            state.frames.clear();
                            return Poll::Ready(None);
                        }
                    }
                }
                let len = cursor.frame_len();
                this.current = None;
                this.inbox.lock().window.consumed(len);
                this.grant(cx);
            }
            let mut state = this.inbox.lock();
            match state.frames.pop_front() {
                Some(frame) => {
                    drop(state);
                    this.current = Some(Cursor::new(frame));
                }
                None if state.ended => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                None => {
                    match &state.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => state.waker = Some(cx.waker().clone()),
                    }
                    drop(state);
                    this.grant(cx);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T> Drop for Incoming<T> {
    fn drop(&mut self) {
        let unread = {
            let mut state = self.inbox.lock();
            let unread = !state.ended && !state.dropped;
            state.dropped = true;
            state.frames.clear();
            unread
        };
        if unread {
            // The client may still be sending: tell it to stop. Nothing waits for this frame;
            // it leaves with the next flush (the handler's answer or stream).
            if let Some(seq) = self.out.try_enqueue_now(Bytes::from(wire::encode_stream_stop(self.id))) {
                let mut cx = Context::from_waker(Waker::noop());
                let _ = self.out.poll_flushed(&mut cx, seq);
            }
        }
    }
}
