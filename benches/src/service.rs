//! The benchmarked service, defined once per framework with the same two methods, and the
//! [`Probe`] trait that lets one set of measurement loops drive either client.
//!
//! `add` is the latency and pipelining probe; `echo` is the bulk probe; `small_items` and
//! `chunks` are the streaming probes (ours only: tarpc has no streams, so its [`Probe`] keeps
//! the default `None` and its cells stay empty). `echo`'s argument is a
//! [`ByteBuf`] on both sides so that postcard (ours) and bincode (tarpc) each encode it as one
//! length-prefixed slice: a plain `Vec<u8>` goes through serde element by element and would
//! measure the encoder's per-byte loop instead of the transport (4–8× slower for tarpc).

use std::error::Error;
use std::future::Future;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_bytes::ByteBuf;
use tarpc::context;

/// Errors of a measurement run (`Send`: with `--multi-thread` the client's tasks run on any of
/// its runtime's workers).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// One streamed item on the wire: 16 bytes, encoded by postcard as exactly 16 bytes (an array is
/// a tuple, no length prefix).
pub type SmallItem = [u8; 16];

/// A server stream as the measurement loops read it, whichever framework produced it: each
/// item is the payload size of one received item.
pub type Items = BoxStream<'static, Result<usize, BoxError>>;

/// Our framework's side of the service.
#[rpc::service]
pub trait Bench {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Returns its argument (received without a copy out of the request, see `rpc::Bytes`).
    async fn echo(&self, data: rpc::Bytes) -> rpc::Bytes;
    /// `n` 16-byte items (`u64::MAX`: until the caller drops the stream), all ready at once, so
    /// the stream runs as fast as the engine and the transport move them.
    async fn small_items(&self, n: u64) -> rpc::Stream<SmallItem>;
    /// `n` chunks of `size` bytes (`u64::MAX`: until the caller drops the stream), all ready at
    /// once; every chunk is the same reference-counted buffer, so the server copies nothing
    /// before encoding.
    async fn chunks(&self, n: u64, size: u32) -> rpc::Stream<rpc::Bytes>;
    /// `len` bytes of 0x5a: in a loan of the call's connection if `lend` (shared memory over
    /// `shm://` with a slab, see `rpc::CallContext::loan`), else in a new heap buffer, as a
    /// handler that builds a `Vec` would. Made afresh for this call, or, if `keep`, made once
    /// and the same payload returned again by later calls asking for the same (a prepared or
    /// cached result; one kept at a time, for the bench's one connection).
    async fn make(&self, len: u32, lend: bool, keep: bool) -> rpc::Bytes;
}

/// Our server's implementation.
pub struct BenchImpl;

impl Bench for BenchImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo(&self, data: rpc::Bytes) -> rpc::Bytes {
        data
    }

    async fn small_items(&self, n: u64) -> rpc::Stream<SmallItem> {
        rpc::Stream::from_iter((0..n).map(|i| {
            let mut item = [0u8; 16];
            item[..8].copy_from_slice(&i.to_le_bytes());
            item
        }))
    }

    async fn chunks(&self, n: u64, size: u32) -> rpc::Stream<rpc::Bytes> {
        let chunk = rpc::Bytes::from(vec![0x5a; size as usize]);
        rpc::Stream::from_iter((0..n).map(move |_| chunk.clone()))
    }

    async fn make(&self, len: u32, lend: bool, keep: bool) -> rpc::Bytes {
        static KEPT: std::sync::Mutex<Option<(bool, rpc::Bytes)>> = std::sync::Mutex::new(None);
        let len = len as usize;
        if keep {
            if let Some((_, kept)) = KEPT.lock().unwrap().as_ref().filter(|(l, b)| *l == lend && b.len() == len) {
                return kept.clone();
            }
        }
        let made = match lend.then(|| rpc::CallContext::with_current(|ctx| ctx.loan(len))).flatten() {
            Some(mut loan) => {
                loan.fill(0x5a);
                loan.freeze()
            }
            None => rpc::Bytes::from(vec![0x5a; len]),
        };
        if keep {
            *KEPT.lock().unwrap() = Some((lend, made.clone()));
        }
        made
    }
}

/// The same service for tarpc.
#[tarpc::service]
pub trait TarpcBench {
    /// Adds two numbers.
    async fn add(a: i64, b: i64) -> i64;
    /// Returns its argument.
    async fn echo(data: ByteBuf) -> ByteBuf;
}

/// tarpc's server implementation.
#[derive(Clone)]
pub struct TarpcImpl;

impl TarpcBench for TarpcImpl {
    async fn add(self, _: context::Context, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn echo(self, _: context::Context, data: ByteBuf) -> ByteBuf {
        data
    }
}

/// What the measurement loops need from a client: cheap to clone (a handle on one
/// connection), and the calls. Errors are boxed only on the failure path.
pub trait Probe: Clone + Send + Sync + 'static {
    /// The framework's own type for a byte payload (what its users would write).
    type Payload: From<Vec<u8>> + AsRef<[u8]> + Send;
    /// `a + b` computed by the server.
    fn add(&self, a: i64, b: i64) -> impl Future<Output = Result<i64, BoxError>> + Send;
    /// `data` sent to the server and back.
    fn echo(&self, data: Self::Payload) -> impl Future<Output = Result<Self::Payload, BoxError>> + Send;
    /// An endless server stream of 16-byte items, or `None` if the framework has no streams.
    fn small_items(&self) -> impl Future<Output = Result<Option<Items>, BoxError>> + Send {
        async { Ok(None) }
    }
    /// An endless server stream of `size`-byte chunks, or `None` if the framework has no streams.
    fn chunks(&self, size: usize) -> impl Future<Output = Result<Option<Items>, BoxError>> + Send {
        let _ = size;
        async { Ok(None) }
    }
    /// A `len`-byte result the server makes as `Bench::make` says (`how`: `(lend, keep)`): its
    /// length (its bytes checked if `check`: a byte-wise look costs more than the call), or
    /// `None` if the framework has no loans.
    fn make(
        &self,
        len: usize,
        how: (bool, bool),
        check: bool,
    ) -> impl Future<Output = Result<Option<usize>, BoxError>> + Send {
        let _ = (len, how, check);
        async { Ok(None) }
    }
}

/// Our generated client.
#[derive(Clone)]
pub struct Ours(pub BenchClient);

impl Probe for Ours {
    type Payload = rpc::Bytes;

    async fn add(&self, a: i64, b: i64) -> Result<i64, BoxError> {
        Ok(self.0.add(a, b).await?)
    }

    async fn echo(&self, data: rpc::Bytes) -> Result<rpc::Bytes, BoxError> {
        Ok(self.0.echo(data).await?)
    }

    async fn small_items(&self) -> Result<Option<Items>, BoxError> {
        let items = self.0.small_items(u64::MAX).await?;
        Ok(Some(items.map(|item| item.map(|item| item.len()).map_err(BoxError::from)).boxed()))
    }

    async fn chunks(&self, size: usize) -> Result<Option<Items>, BoxError> {
        let size = u32::try_from(size)?;
        let chunks = self.0.chunks(u64::MAX, size).await?;
        Ok(Some(chunks.map(|chunk| chunk.map(|chunk| chunk.len()).map_err(BoxError::from)).boxed()))
    }

    async fn make(&self, len: usize, (lend, keep): (bool, bool), check: bool) -> Result<Option<usize>, BoxError> {
        let made = self.0.make(u32::try_from(len)?, lend, keep).await?;
        if check && made.iter().any(|&b| b != 0x5a) {
            return Err("a made result held other bytes".into());
        }
        Ok(Some(made.len()))
    }
}

/// tarpc's generated client. Every call gets tarpc's default context (10 s deadline, fresh
/// trace ids), as a tarpc user's call would. tarpc has no streams: the streaming probes keep
/// their default (`None`).
#[derive(Clone)]
pub struct Tarpc(pub TarpcBenchClient);

impl Probe for Tarpc {
    type Payload = ByteBuf;

    async fn add(&self, a: i64, b: i64) -> Result<i64, BoxError> {
        Ok(self.0.add(context::current(), a, b).await?)
    }

    async fn echo(&self, data: ByteBuf) -> Result<ByteBuf, BoxError> {
        Ok(self.0.echo(context::current(), data).await?)
    }
}
