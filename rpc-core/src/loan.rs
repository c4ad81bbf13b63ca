//! [`Loan`]: a buffer a handler fills with a result payload in memory its connection shares
//! with the peer, so that the transport can send the payload without copying it.
//!
//! A large payload ([`Bytes`](crate::bytes::Bytes) of at least
//! [`SPLICE_MIN`](crate::wire::SPLICE_MIN), 16 KiB) is not copied into its frame, but a transport
//! that moves frames through shared memory (`shm://`) still copies it once, from the handler's
//! heap buffer into the memory the peer reads. A transport that can *lends* buffers of memory
//! the peer can read ([`Lend`]): a handler that takes one ([`CallContext::loan`]) writes the
//! payload there, and the transport may send it by reference instead (`shm://` does from the
//! payload's second send on; see its `ShmOptions::slab_size` for when that pays). Every other
//! transport lends nothing, and the same code gets an ordinary heap buffer.
//!
//! What the handler finds in a buffer depends on where it came from: a lent buffer holds whatever
//! was there before (earlier payloads of the same connection), so the handler must write all of
//! it; a heap buffer is zeroed. The peer can read a lent buffer as soon as it is written, sent or
//! not: write into it only what that peer may see. Payloads under
//! [`SPLICE_MIN`](crate::wire::SPLICE_MIN) are copied into their frame anyway, so a loan gains
//! them nothing.
//!
//! Transports implement [`Lend`] and hand a [`Lender`] to the engines in their
//! [`ConnectionInfo`](crate::transport::ConnectionInfo::lender).
//!
//! [`CallContext::loan`]: crate::context::CallContext::loan

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

/// A writable buffer for one payload, lent by a connection (shared memory it sends without
/// copying) or, where the connection lends nothing, on the heap.
///
/// Fill all of it (a lent buffer holds earlier payloads), then [`freeze`](Self::freeze) it into
/// the payload to return or send.
pub struct Loan {
    repr: Repr,
}

enum Repr {
    Heap(bytes::BytesMut),
    Lent(Lent),
}

impl Loan {
    /// A zeroed heap buffer of `len` bytes.
    pub fn heap(len: usize) -> Loan {
        Loan { repr: Repr::Heap(bytes::BytesMut::zeroed(len)) }
    }

    /// Whether the buffer is memory the connection lent (sent without a copy) rather than heap.
    pub fn is_shared(&self) -> bool {
        matches!(self.repr, Repr::Lent(_))
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Heap(buf) => buf.len(),
            Repr::Lent(lent) => lent.len,
        }
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The filled buffer as a payload, without copying. A lent buffer goes back to its
    /// transport when the last clone of the payload is dropped.
    pub fn freeze(self) -> crate::bytes::Bytes {
        match self.repr {
            Repr::Heap(buf) => buf.freeze().into(),
            Repr::Lent(lent) => bytes::Bytes::from_owner(Frozen(lent)).into(),
        }
    }
}

impl Deref for Loan {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.repr {
            Repr::Heap(buf) => buf,
            // SAFETY: per `Lent::new`, `ptr` is valid for reads of `len` initialized bytes while
            // the owner (held by `lent`, borrowed for the slice's lifetime) lives, and nothing
            // else in this process writes them; the only writer, `deref_mut`, needs `&mut self`.
            Repr::Lent(lent) => unsafe { std::slice::from_raw_parts(lent.ptr.as_ptr(), lent.len) },
        }
    }
}

impl DerefMut for Loan {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.repr {
            Repr::Heap(buf) => buf,
            // SAFETY: per `Lent::new`, `ptr` is valid for reads and writes of `len` initialized
            // bytes while the owner lives, and nothing else in this process (nor another process)
            // writes them; `&mut self` makes this the only reference to them here. A peer reading
            // them meanwhile sees unspecified bytes, which is what it may see of a lent buffer.
            Repr::Lent(lent) => unsafe { std::slice::from_raw_parts_mut(lent.ptr.as_ptr(), lent.len) },
        }
    }
}

impl AsRef<[u8]> for Loan {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for Loan {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

// Never the bytes: a lent buffer may still hold another payload of the connection.
impl fmt::Debug for Loan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan").field("len", &self.len()).field("shared", &self.is_shared()).finish()
    }
}

/// Memory a transport lends: `len` bytes at `ptr`, kept alive by `owner` (dropping the owner
/// returns the memory to the transport).
pub struct Lent {
    ptr: NonNull<u8>,
    len: usize,
    // Never read: held for its drop, which returns the memory.
    _owner: Box<dyn Send + Sync>,
}

impl Lent {
    /// Memory of `len` bytes at `ptr`, lent until `owner` is dropped.
    ///
    /// # Safety
    ///
    /// `ptr` is valid for reads and writes of `len` initialized bytes until `owner` is dropped;
    /// nothing else in this process writes them meanwhile, or reads them but through this
    /// `Lent` (once frozen, its transport may read the payload it sends), and no other process
    /// can write them (a peer may read them).
    pub unsafe fn new(ptr: NonNull<u8>, len: usize, owner: Box<dyn Send + Sync>) -> Lent {
        Lent { ptr, len, _owner: owner }
    }
}

// SAFETY: a `Lent` is the only access in this process to the memory it points at (per `new`'s
// contract), kept alive by `owner`, which is `Send`; moving it to another thread moves that
// exclusive access with it, as moving a `Box<[u8]>` would.
unsafe impl Send for Lent {}

// SAFETY: `Lent` itself offers no access to its memory through `&Lent`; the reads `Loan` and
// `Frozen` do through a shared reference are of memory nothing else in this process writes (per
// `new`'s contract), and `owner` is `Sync`.
unsafe impl Sync for Lent {}

// Never the bytes, as for `Loan`.
impl fmt::Debug for Lent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lent").field("len", &self.len).finish_non_exhaustive()
    }
}

/// A lent buffer after [`Loan::freeze`]: the owner of a payload that shares the lent memory.
struct Frozen(Lent);

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        let lent = &self.0;
        // SAFETY: the memory is valid for `len` initialized bytes while the owner (inside `self`)
        // lives, per `Lent::new`. Once frozen nobody in this process writes it (`Frozen` offers no
        // `&mut` access, and the `Loan` that could write is gone) and no other process can.
        unsafe { std::slice::from_raw_parts(lent.ptr.as_ptr(), lent.len) }
    }
}

/// What a transport implements to lend buffers.
pub trait Lend: Send + Sync + 'static {
    /// A buffer of exactly `len` bytes, or `None` when there is none to lend (too large, or all
    /// lent out): the caller then uses the heap.
    fn lend(&self, len: usize) -> Option<Lent>;
}

/// A connection's lender: cheap to clone, compared by identity.
#[derive(Clone)]
pub struct Lender(Arc<dyn Lend>);

impl Lender {
    /// A lender that lends through `lend`.
    pub fn new(lend: impl Lend) -> Lender {
        Lender(Arc::new(lend))
    }

    /// A buffer of `len` bytes: lent if the transport has one, else on the heap.
    pub fn loan(&self, len: usize) -> Loan {
        match self.0.lend(len) {
            Some(lent) => {
                debug_assert_eq!(lent.len, len, "Lend::lend must lend exactly the length asked for");
                Loan { repr: Repr::Lent(lent) }
            }
            None => Loan::heap(len),
        }
    }

    // The data pointer alone: the vtable part of a `dyn` pointer may differ between codegen
    // units for the same object.
    fn id(&self) -> *const () {
        Arc::as_ptr(&self.0).cast::<()>()
    }
}

// By identity: two connections' lenders are equal only if they are the same one.
impl PartialEq for Lender {
    fn eq(&self, other: &Lender) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Lender {}

impl fmt::Debug for Lender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lender(..)")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

    use super::*;

    /// Lends the start of one arena, one buffer at a time, counting the buffers alive.
    struct OneAtATime {
        // Atomics so that the arena may be written through a pointer derived from `&self`.
        arena: Arc<[AtomicU8]>,
        alive: Arc<AtomicUsize>,
    }

    impl OneAtATime {
        /// An arena of `len` bytes full of garbage (as shared memory holding earlier payloads).
        fn new(len: usize) -> (OneAtATime, *const u8, Arc<AtomicUsize>) {
            let arena: Arc<[AtomicU8]> = (0..len).map(|_| AtomicU8::new(0xEE)).collect();
            let start = arena.as_ptr().cast::<u8>();
            let alive = Arc::new(AtomicUsize::new(0));
            (OneAtATime { arena, alive: Arc::clone(&alive) }, start, alive)
        }
    }

    /// Returns the buffer when dropped.
    struct Slot {
        _arena: Arc<[AtomicU8]>,
        alive: Arc<AtomicUsize>,
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            self.alive.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Lend for OneAtATime {
        fn lend(&self, len: usize) -> Option<Lent> {
            if len > self.arena.len() || self.alive.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_err()
            {
                return None;
            }
            let ptr = NonNull::new(self.arena.as_ptr().cast::<u8>().cast_mut()).expect("Arc data is not null");
            let owner = Box::new(Slot { _arena: Arc::clone(&self.arena), alive: Arc::clone(&self.alive) });
            // SAFETY: the first `len` bytes of the arena are initialized, kept alive by the
            // `Slot`'s `Arc`, writable through a shared pointer (atomics are interior-mutable),
            // and lent to one `Lent` at a time (`alive` goes back to 0 only when the `Slot`
            // drops); nothing else touches the arena while it is lent.
            Some(unsafe { Lent::new(ptr, len, owner) })
        }
    }

    #[test]
    fn lent_loan_is_filled_in_place_and_returned_with_the_last_clone() {
        let (lend, start, alive) = OneAtATime::new(64);
        let lender = Lender::new(lend);
        let mut loan = lender.loan(32);
        assert!(loan.is_shared());
        assert_eq!((loan.len(), loan.is_empty()), (32, false));
        assert_eq!(loan.as_ptr(), start);
        assert_eq!(alive.load(Ordering::SeqCst), 1);

        for (i, byte) in loan.iter_mut().enumerate() {
            *byte = i as u8;
        }
        let frozen = loan.freeze();
        // The payload is the lent memory itself, with what was written through the loan.
        assert_eq!(frozen.as_ptr(), start);
        assert_eq!(&frozen[..], (0..32).collect::<Vec<u8>>());

        let part = frozen.slice(8..16);
        drop(frozen);
        assert_eq!(alive.load(Ordering::SeqCst), 1, "a clone still shares the buffer");
        assert_eq!(&part[..], (8..16).collect::<Vec<u8>>());
        drop(part);
        assert_eq!(alive.load(Ordering::SeqCst), 0, "the last clone returned the buffer");

        // Returned, so it can be lent again.
        assert!(lender.loan(16).is_shared());
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn unfrozen_loan_returns_its_buffer_when_dropped() {
        let (lend, _, alive) = OneAtATime::new(64);
        let loan = Lender::new(lend).loan(64);
        assert!(loan.is_shared());
        assert_eq!(alive.load(Ordering::SeqCst), 1);
        drop(loan);
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn loan_falls_back_to_a_zeroed_heap_buffer() {
        let (lend, start, alive) = OneAtATime::new(64);
        let lender = Lender::new(lend);
        let held = lender.loan(8);
        assert!(held.is_shared());
        // The transport's garbage shows through a lent buffer...
        assert_eq!(&held[..], [0xEE; 8]);

        // ...but all lent out, or too large: a zeroed heap buffer.
        for (loan, len) in [(lender.loan(16), 16), (lender.loan(65), 65)] {
            assert!(!loan.is_shared());
            assert_eq!(loan.len(), len);
            assert_ne!(loan.as_ptr(), start);
            assert!(loan.iter().all(|&b| b == 0));
            assert!(loan.freeze().iter().all(|&b| b == 0));
        }
        drop(held);
        assert_eq!(alive.load(Ordering::SeqCst), 0);

        let mut heap = Loan::heap(4);
        heap.as_mut().copy_from_slice(b"abcd");
        assert_eq!((heap.is_shared(), heap.as_ref()), (false, &b"abcd"[..]));
        assert_eq!(&heap.freeze()[..], b"abcd");
        assert!(Loan::heap(0).is_empty());
    }

    #[test]
    fn lenders_are_equal_by_identity() {
        let (a, _, _) = OneAtATime::new(8);
        let (b, _, _) = OneAtATime::new(8);
        let a = Lender::new(a);
        let b = Lender::new(b);
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Lender(..)");
    }

    #[test]
    fn call_context_loans_from_its_connection() {
        use crate::context::CallContext;
        use crate::transport::ConnectionInfo;

        let (lend, start, _) = OneAtATime::new(64);
        let lender = Lender::new(lend);
        let info = ConnectionInfo::new("shm", "peer", 1 << 20).with_lender(Some(lender.clone()));
        assert_eq!(info.lender, Some(lender));
        assert_ne!(info, ConnectionInfo::new("shm", "peer", 1 << 20));
        let lent = CallContext::new(Arc::new(info), 1, 2, None, None).loan(32);
        assert!(lent.is_shared());
        assert_eq!(lent.as_ptr(), start);

        let plain = CallContext::new(Arc::new(ConnectionInfo::new("tcp", "peer", 1 << 20)), 1, 2, None, None);
        let heap = plain.loan(32);
        assert!(!heap.is_shared());
        assert!(heap.iter().all(|&b| b == 0));
    }

    #[test]
    fn loan_debug_never_shows_the_bytes() {
        let (lend, _, _) = OneAtATime::new(8);
        let mut lent = Lender::new(lend).loan(4);
        lent.fill(0xAB);
        assert_eq!(format!("{lent:?}"), "Loan { len: 4, shared: true }");
        let mut heap = Loan::heap(4);
        heap.fill(0xAB);
        assert_eq!(format!("{heap:?}"), "Loan { len: 4, shared: false }");
    }

    #[test]
    fn loan_crosses_threads() {
        // A handler's future holds its loan across `.await`s, on whichever thread polls it.
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Loan>();
        send_sync::<Lent>();
        send_sync::<Lender>();
    }
}
