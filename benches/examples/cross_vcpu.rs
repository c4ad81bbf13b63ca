//! Is this machine in its slow mode? Echoes 1 MiB messages between two threads pinned to CPUs 0
//! and 1 (where `rpc-bench --pin` puts client and server), through shared memory in one process:
//! no tokio, no framework, no system calls. Rounds of 100 echoes alternate between two designs:
//!
//! - `ring`: a 1 MiB byte ring crossed in 32 KiB steps, the reader copying out one step behind
//!   the writer (what `shm://` does with a large frame);
//! - `mailbox`: the whole message copied in, then out (what the raw shm row does).
//!
//! On the 2-vCPU VMs of 2026-12 an echo took 70–110 µs either way, and about 900–1,100 µs in periods
//! that lasted from one round to minutes, both designs alike, while a single-thread `memcpy` of
//! the same size did not change: what slows is the traffic between the two vCPUs. Bench runs in
//! such a period measure the machine, not the code.
//!
//! ```text
//! cargo run --release -p rpc-bench --example cross_vcpu [ROUNDS]
//! ```

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RING: usize = 1 << 20;
const MESSAGE: usize = (1 << 20) + 20;
const STEP: usize = 32 * 1024;
const ECHOES: u32 = 100;
/// An echo is four copies of the message; over this many times one copy on one thread, the
/// traffic between the CPUs is what it is waiting for (about 4 when the machine is not slowed,
/// about 40 when it is, on the VMs of 2026-12).
const SLOW: f64 = 10.0;

/// A word on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Word(AtomicU64);

/// One direction: a data area and the indices that hand it back and forth: in ring mode stream
/// positions, in mailbox mode message counts.
struct Lane {
    data: Box<[UnsafeCell<u8>]>,
    published: Word,
    consumed: Word,
    sent: Word,
    taken: Word,
}

// SAFETY: the data area is written only by the lane's one writer thread and read only by its one
// reader thread, each only in the range the indices give it (bytes published and not consumed
// for the reader, the rest for the writer; in mailbox mode the whole message, to the writer
// until it is sent, then to the reader until it is taken), and both threads switch modes at the
// same round, once the last echo of the previous one is back; the Release store of an index
// after a copy and the Acquire load before the next make every copy happen before the other
// side's access.
unsafe impl Sync for Lane {}

impl Lane {
    fn new() -> Self {
        let data = (0..RING.max(MESSAGE)).map(|_| UnsafeCell::new(0)).collect();
        Lane {
            data,
            published: Word::default(),
            consumed: Word::default(),
            sent: Word::default(),
            taken: Word::default(),
        }
    }

    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.data.as_ptr())
    }

    /// Ring mode: copies `src` in, `STEP` bytes at most per publish, as room allows.
    fn ring_write(&self, head: &mut u64, src: &[u8]) {
        let mut done = 0;
        while done < src.len() {
            let room = RING - (*head - self.consumed.0.load(Acquire)) as usize;
            if room == 0 {
                std::hint::spin_loop();
                continue;
            }
            let (n, at, first) = step(*head, src.len() - done, room);
            // SAFETY: `at..at + first` and `0..n - first` lie in the ring's free room (`n <=
            // room`), which the reader does not touch until we publish (see `impl Sync`).
            unsafe {
                std::ptr::copy_nonoverlapping(src[done..].as_ptr(), self.base().add(at), first);
                std::ptr::copy_nonoverlapping(src[done + first..].as_ptr(), self.base(), n - first);
            }
            *head += n as u64;
            done += n;
            self.published.0.store(*head, Release);
        }
    }

    /// Ring mode: copies `dst.len()` bytes out, as they are published.
    fn ring_read(&self, tail: &mut u64, dst: &mut [u8]) {
        let mut done = 0;
        while done < dst.len() {
            let ready = (self.published.0.load(Acquire) - *tail) as usize;
            if ready == 0 {
                std::hint::spin_loop();
                continue;
            }
            let (n, at, first) = step(*tail, dst.len() - done, ready);
            // SAFETY: `n <= ready` bytes from `tail` are published, so the writer has finished
            // them and will not touch them until we store the new tail (see `impl Sync`).
            unsafe {
                std::ptr::copy_nonoverlapping(self.base().add(at), dst[done..].as_mut_ptr(), first);
                std::ptr::copy_nonoverlapping(self.base(), dst[done + first..].as_mut_ptr(), n - first);
            }
            *tail += n as u64;
            done += n;
            self.consumed.0.store(*tail, Release);
        }
    }

    /// Mailbox mode: waits until the previous message was taken, copies `src` in, publishes it.
    fn mailbox_write(&self, sent: &mut u64, src: &[u8]) {
        while self.taken.0.load(Acquire) != *sent {
            std::hint::spin_loop();
        }
        // SAFETY: the reader took the previous message (`taken == sent`) and reads the area
        // again only after we publish the next (see `impl Sync`).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base(), src.len()) };
        *sent += 1;
        self.sent.0.store(*sent, Release);
    }

    /// Mailbox mode: waits for the next message, copies it out, hands the area back.
    fn mailbox_read(&self, taken: &mut u64, dst: &mut [u8]) {
        while self.sent.0.load(Acquire) == *taken {
            std::hint::spin_loop();
        }
        // SAFETY: the message is published and the writer waits for our store below before it
        // writes the area again (see `impl Sync`).
        unsafe { std::ptr::copy_nonoverlapping(self.base(), dst.as_mut_ptr(), dst.len()) };
        *taken += 1;
        self.taken.0.store(*taken, Release);
    }
}

/// One ring step at stream position `at_pos` with `left` bytes to go and `avail` bytes of room
/// (writer) or data (reader): how many bytes (at most `STEP`), where in the ring they start, and
/// how many of them come before the ring's end (the rest wrap to its start).
fn step(at_pos: u64, left: usize, avail: usize) -> (usize, usize, usize) {
    let n = left.min(avail).min(STEP);
    let at = (at_pos as usize) % RING;
    (n, at, n.min(RING - at))
}

/// One side's positions in both lanes and both modes.
#[derive(Default)]
struct Positions {
    ring_out: u64,
    ring_in: u64,
    mail_out: u64,
    mail_in: u64,
}

#[cfg(target_os = "linux")]
fn pin(cpu: usize) {
    // SAFETY: a zeroed `cpu_set_t` is an empty set; `CPU_SET` and `sched_setaffinity` get a
    // valid pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("could not pin a thread to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn pin(_cpu: usize) {
    eprintln!("threads are not pinned on this platform");
}

fn main() {
    let rounds: u32 = std::env::args().nth(1).map_or(100, |n| n.parse().expect("ROUNDS is a number"));
    let lanes = Arc::new((Lane::new(), Lane::new()));
    let peer = Arc::clone(&lanes);
    std::thread::spawn(move || {
        pin(1);
        let (to_me, to_them) = (&peer.0, &peer.1);
        let (mut at, mut buf) = (Positions::default(), vec![0u8; MESSAGE]);
        for round in 0..rounds {
            for _ in 0..ECHOES {
                if round % 2 == 0 {
                    to_me.ring_read(&mut at.ring_in, &mut buf);
                    to_them.ring_write(&mut at.ring_out, &buf);
                } else {
                    to_me.mailbox_read(&mut at.mail_in, &mut buf);
                    to_them.mailbox_write(&mut at.mail_out, &buf);
                }
            }
        }
    });
    pin(0);
    let (to_them, to_me) = (&lanes.0, &lanes.1);
    let (mut at, mut buf) = (Positions::default(), vec![0x5au8; MESSAGE]);
    let mut copy = vec![0u8; MESSAGE];
    // Per design: each round's echo, and whether it took over `SLOW` lone copies.
    let mut results: [Vec<(Duration, bool)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let started = Instant::now();
        for _ in 0..ECHOES {
            if round % 2 == 0 {
                to_them.ring_write(&mut at.ring_out, &buf);
                to_me.ring_read(&mut at.ring_in, &mut buf);
            } else {
                to_them.mailbox_write(&mut at.mail_out, &buf);
                to_me.mailbox_read(&mut at.mail_in, &mut buf);
            }
        }
        let echo = started.elapsed() / ECHOES;
        // The same bytes copied once on this thread alone, for comparison.
        let started = Instant::now();
        for _ in 0..ECHOES {
            std::hint::black_box(&mut copy).copy_from_slice(std::hint::black_box(&buf));
        }
        let alone = started.elapsed() / ECHOES;
        let design = (round % 2) as usize;
        let ratio = echo.as_secs_f64() / alone.as_secs_f64().max(1e-9);
        println!(
            "round {round:3} {:7}: {:7.1} µs an echo = {ratio:5.1} lone copies of {:5.1} µs",
            ["ring", "mailbox"][design],
            us(echo),
            us(alone)
        );
        results[design].push((echo, ratio > SLOW));
    }
    for (design, mut times) in results.into_iter().enumerate() {
        times.sort();
        let slow = times.iter().filter(|(_, slow)| *slow).count();
        if let Some((median, _)) = times.get(times.len() / 2) {
            println!(
                "{:7}: median {:.1} µs an echo; {slow} of {} rounds slow (over {SLOW} lone copies)",
                ["ring", "mailbox"][design],
                us(*median),
                times.len()
            );
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
