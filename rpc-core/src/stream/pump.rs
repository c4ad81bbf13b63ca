//! The sending loop of a stream, the same on both ends: takes items from an [`EncodedStream`]
//! while the receiver has credit, batches the items that are ready into one frame, and ends
//! with a stream end frame.
//!
//! Batching is what makes small items cheap: every item that is ready when the loop looks goes
//! into the frame being built (up to [`BATCH_MAX`] bytes or the credit left), and the frame leaves
//! as soon as the source has nothing more ready, so a lone item is not held back either.

use std::task::{Context, Poll};

use super::flow::{Credit, SendWindow};
use super::EncodedStream;
use crate::error::RpcError;
use crate::outbound::SharedSender;
use crate::wire::{self, Encoded, ItemsWriter, STREAM_ITEMS_HEADER_LEN};

/// The most item bytes one frame takes while more items are ready. A frame holds at least one
/// item, whatever its size (up to the connection's maximum frame length).
pub(crate) const BATCH_MAX: usize = 64 * 1024;

/// How a stream's sending ended, if not with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// Every item and the stream end were flushed.
    Ended,
    /// The receiver said it wants no more.
    Stopped,
}

/// Why a stream's sending failed.
#[derive(Debug, Clone)]
pub(crate) enum PumpError {
    /// An item could not be encoded.
    Encode(String),
    /// One item is larger than a frame may be.
    TooLarge { size: usize, max: usize },
    /// The connection failed.
    Send(RpcError),
}

/// One stream being sent.
pub(crate) struct Pump {
    id: u64,
    source: EncodedStream,
    max_frame_len: usize,
    /// The frame being filled.
    batch: Option<ItemsWriter>,
    /// A finished frame waiting for room in the transport.
    ready: Option<Encoded>,
    /// Sequence number of the last frame queued (0: none).
    last_seq: u64,
    source_done: bool,
    end_queued: bool,
}

impl Pump {
    pub(crate) fn new(id: u64, source: EncodedStream, max_frame_len: usize) -> Self {
        Pump { id, source, max_frame_len, batch: None, ready: None, last_seq: 0, source_done: false, end_queued: false }
    }

    /// Drives the stream; ready when it ended, was stopped, or failed.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        out: &SharedSender,
        window: &SendWindow,
    ) -> Poll<Result<PumpEnd, PumpError>> {
        loop {
            if self.ready.is_some() {
                match out.poll_enqueue(cx, &mut self.ready) {
                    Poll::Ready(Ok(seq)) => self.last_seq = seq,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(PumpError::Send(e))),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if self.end_queued {
                return match self.poll_flush(cx, out) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(PumpEnd::Ended)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                };
            }
            if self.source_done && self.batch.as_ref().is_none_or(ItemsWriter::is_empty) {
                self.ready = Some(wire::encode_stream_end(self.id).into());
                self.end_queued = true;
                continue;
            }
            // Stopped wins over credit: a receiver that stopped discards whatever we send.
            let credit = match window.poll_credit(cx) {
                Poll::Ready(Credit::Stopped) => return Poll::Ready(Ok(PumpEnd::Stopped)),
                Poll::Ready(Credit::Available(credit)) => credit,
                Poll::Pending => return self.wait(cx, out),
            };
            let limit = credit.min(BATCH_MAX) + STREAM_ITEMS_HEADER_LEN;
            let mut source_pending = false;
            let batch = self.batch.get_or_insert_with(|| ItemsWriter::new(self.id));
            while !self.source_done && batch.len() < limit {
                match self.source.poll_push(cx, batch) {
                    Poll::Ready(Some(Ok(()))) => {
                        if batch.len() > self.max_frame_len {
                            match batch.split_last(self.id) {
                                // The item that did not fit starts the next frame.
                                Some(rest) => {
                                    let full = std::mem::replace(batch, rest);
                                    window.spend(full.len());
                                    self.ready = Some(full.finish());
                                    break;
                                }
                                None => {
                                    return Poll::Ready(Err(PumpError::TooLarge {
                                        size: batch.len(),
                                        max: self.max_frame_len,
                                    }))
                                }
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(PumpError::Encode(e))),
                    Poll::Ready(None) => self.source_done = true,
                    Poll::Pending => {
                        source_pending = true;
                        break;
                    }
                }
            }
            if self.ready.is_some() {
                continue;
            }
            let batch = self.batch.take().expect("filled above");
            if batch.is_empty() {
                if source_pending {
                    self.batch = Some(batch);
                    return self.wait(cx, out);
                }
                // The source ended with nothing more: the end frame is next.
                continue;
            }
            window.spend(batch.len());
            self.ready = Some(batch.finish());
        }
    }

    /// About to wait for the source or for credit: push out what is queued first, so items
    /// are not held back while the loop waits.
    fn wait(&mut self, cx: &mut Context<'_>, out: &SharedSender) -> Poll<Result<PumpEnd, PumpError>> {
        match self.poll_flush(cx, out) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Pending,
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>, out: &SharedSender) -> Poll<Result<(), PumpError>> {
        if self.last_seq == 0 {
            return Poll::Ready(Ok(()));
        }
        out.poll_flushed(cx, self.last_seq).map_err(PumpError::Send)
    }
}
