//! The `shm` row's limit: frames through our `shm://` transport itself, without the RPC engine.
//!
//! Shared memory has no OS primitive to compare with (the ring *is* the primitive), so the raw
//! side of the `shm` row is the transport's own connection driven by a blocking client: one
//! frame per message, echoed frame by frame. `ours / raw` on this row is then exactly what the
//! engine (encoding, call table, handler dispatch) adds on top of the transport.

use std::io::{self, Read, Write};

use bytes::{Buf, Bytes, BytesMut};
use rpc::transport::{recv, send, Connection};
use rpc::transports::TransportOptions;

/// The largest frame the raw shm row sends (the bulk message plus headroom).
const MAX_FRAME: usize = 64 << 20;

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn options() -> TransportOptions {
    TransportOptions::default().max_frame_len(MAX_FRAME)
}

/// Serves `shm://name`, echoing every frame after the first (the size announcement), or, when
/// the announcement asks for one-way bulk, sending the frames each later frame counts.
pub fn serve(name: &str, announce: impl FnOnce()) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let mut listener =
            rpc::transports::listen_with(&format!("shm://{name}"), &options()).await.map_err(io::Error::other)?;
        announce();
        loop {
            let mut conn = listener.accept().await?;
            tokio::spawn(async move {
                let size = match recv(&mut *conn.receiver).await {
                    Ok(Some(frame)) => announced(&frame),
                    _ => return,
                };
                if size & crate::raw::ONE_WAY != 0 {
                    // One-way bulk (see `raw.rs`): each frame is a count of frames to send.
                    let chunk = Bytes::from(vec![0x5a; (size & !crate::raw::ONE_WAY) as usize]);
                    while let Ok(Some(count)) = recv(&mut *conn.receiver).await {
                        for _ in 0..announced(&count) {
                            if send(&mut *conn.sender, chunk.clone()).await.is_err() {
                                return;
                            }
                        }
                    }
                    return;
                }
                while let Ok(Some(frame)) = recv(&mut *conn.receiver).await {
                    if send(&mut *conn.sender, frame).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// The 8 little-endian bytes of a size or count announcement (0 if the frame is malformed).
fn announced(frame: &[u8]) -> u64 {
    frame.try_into().map_or(0, u64::from_le_bytes)
}

/// A blocking client: each `write` call is one frame; reads come from the last frame received.
///
/// Its buffers are reused as a program would reuse them: a frame is built in `out`, whose
/// memory comes back once the transport has copied the frame into the ring, and a received
/// frame is released as soon as it is read out, so the transport's receive buffer gets its
/// memory back too. Fresh buffers for every 1 MiB or 16 MiB message would have this row count
/// allocations and page faults that neither the ring nor ours (which receives into reused
/// buffers and echoes `rpc::Bytes` without a copy) makes.
pub struct Client {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    out: BytesMut,
    pending: Bytes,
}

impl Client {
    /// Runs `future` to completion on this thread: polled once in place, and only if that
    /// leaves it waiting (it spun out without the bytes or the room it waits for, or yielded to
    /// the runtime) handed to the runtime, whose `block_on` polls it again and sleeps on its
    /// wake-up.
    ///
    /// A `block_on` for every frame would cost more than the ring: entering the runtime,
    /// seeding its RNG and setting up its scheduler context took about 1,700 of the 3,050
    /// instructions of a 16-byte round trip (callgrind of a loop of these sends and receives).
    /// The first poll's waker does nothing, which loses nothing: `block_on` polls the future
    /// before it sleeps, with a waker that works, and the future registers that one.
    fn run<F: std::future::Future>(rt: &tokio::runtime::Runtime, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let polled = {
            // Inside the runtime's context, as anything that registers with its reactor expects.
            let _entered = rt.enter();
            future.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        };
        match polled {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => rt.block_on(future),
        }
    }

    pub fn connect(name: &str) -> io::Result<Self> {
        let rt = runtime()?;
        let conn = rt
            .block_on(rpc::transports::connect_with(&format!("shm://{name}"), &options()))
            .map_err(io::Error::other)?;
        Ok(Client { rt, conn, out: BytesMut::new(), pending: Bytes::new() })
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        let frame = self.out.split().freeze();
        Self::run(&self.rt, send(&mut *self.conn.sender, frame))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            match Self::run(&self.rt, recv(&mut *self.conn.receiver))? {
                Some(frame) => self.pending = frame,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        if self.pending.is_empty() {
            // Released now, not when the next frame replaces it.
            self.pending = Bytes::new();
        }
        Ok(n)
    }
}
