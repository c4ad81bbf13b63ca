//! The copy into and out of a shared ring, which must not use `rep movsb` on x86-64.
//!
//! glibc's `memcpy` copies from 2,112 bytes up to the L2 cache's size (512 KiB here) with
//! `rep movsb` on CPUs that report fast short string moves (FSRM; from 8 KiB with ERMS alone).
//! On the AMD EPYC machines this project runs on, `rep movsb` then moves 2.2–2.9 GB/s instead
//! of 32–58 when `(dst - src) mod 4096` is 1 to 31 (as if it suspected an overlap): 1, 8, 31,
//! 4,104, 8,208 and 20,511 bytes apart were slow, 32, 72, 520, 4,095 and 28,705 fast (a C loop
//! copying 4 KiB and 32 KiB, each figure the best of 200 copies); 32-byte vector loads and
//! stores ran 27–45 GB/s at every distance. A ring and the buffers that fill and drain it are
//! laid out alike (page-aligned rings, frames at offsets that repeat), so a connection's copies
//! can keep falling into that window: with `memcpy`, some connections streamed large frames
//! (which cross in [`STEP`](super::ring::STEP)s of 32 KiB) 2–4 times slower than others.
//!
//! So every copy of [`REP_MOVSB_FROM`] bytes or more goes through a loop of unaligned 32-byte
//! (AVX2) or 16-byte (SSE2) loads and stores, and shorter ones and the loop's tail through
//! `memcpy`, which copies them with vector moves. The loop is at most about a fifth slower than
//! `rep movsb` outside the window, and never 15 times slower; it leaves no window to get wrong.
//! (Taking the loop only inside the window did no better in four alternated `rpc-bench --only
//! shm` runs; their slow connections were slow at 64 B too, where no copy takes the loop.)
//! Other targets use `memcpy` throughout.

/// The smallest copy that glibc's `memcpy` would do with `rep movsb` (its default
/// `x86_rep_movsb_threshold` on CPUs with FSRM, 0x840); shorter ones go to `memcpy`.
#[cfg(any(test, target_arch = "x86_64"))]
const REP_MOVSB_FROM: usize = 2112;

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
///
/// As [`std::ptr::copy_nonoverlapping`]: `src` readable and `dst` writable for `len` bytes,
/// the two ranges not overlapping. Neither needs any alignment.
pub(crate) unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len >= REP_MOVSB_FROM {
        // SAFETY: the caller's promise, passed on; the AVX2 path runs only where the CPU has it.
        unsafe {
            if std::is_x86_feature_detected!("avx2") {
                x86_64::copy_avx2(src, dst, len);
            } else {
                x86_64::copy_sse2(src, dst, len);
            }
        }
        return;
    }
    // SAFETY: the caller's promise, which is `copy_nonoverlapping`'s.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_storeu_si256, _mm_loadu_si128, _mm_storeu_si128,
    };

    /// The copy loop for one vector type: `$vec` registers of `size_of::<$vec>()` bytes moved
    /// four at a time (which keeps the load and store units busy without waiting on one
    /// register), then `memcpy` for the rest. One body for both widths, so that the AVX2
    /// version is compiled inside its `#[target_feature]` function.
    macro_rules! copy_loop {
        ($src:ident, $dst:ident, $len:ident, $vec:ty, $load:ident, $store:ident) => {{
            const STEP: usize = 4 * std::mem::size_of::<$vec>();
            while $len >= STEP {
                // SAFETY: `$len >= STEP` bytes remain in both ranges (the caller's promise for
                // the whole copy, minus what the loop has moved), so the four loads and stores
                // stay inside them; the unaligned (`u`) intrinsics take any alignment.
                unsafe {
                    let s = $src.cast::<$vec>();
                    let d = $dst.cast::<$vec>();
                    let (a, b, c, e) = ($load(s), $load(s.add(1)), $load(s.add(2)), $load(s.add(3)));
                    $store(d, a);
                    $store(d.add(1), b);
                    $store(d.add(2), c);
                    $store(d.add(3), e);
                    $src = $src.add(STEP);
                    $dst = $dst.add(STEP);
                }
                $len -= STEP;
            }
            // SAFETY: the `$len < STEP` bytes left of both ranges.
            unsafe { std::ptr::copy_nonoverlapping($src, $dst, $len) }
        }};
    }

    /// # Safety
    ///
    /// As [`super::copy`], and the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copy_avx2(mut src: *const u8, mut dst: *mut u8, mut len: usize) {
        copy_loop!(src, dst, len, __m256i, _mm256_loadu_si256, _mm256_storeu_si256)
    }

    /// # Safety
    ///
    /// As [`super::copy`] (SSE2 is part of every x86-64 CPU).
    pub(super) unsafe fn copy_sse2(mut src: *const u8, mut dst: *mut u8, mut len: usize) {
        copy_loop!(src, dst, len, __m128i, _mm_loadu_si128, _mm_storeu_si128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A way to copy, as [`copy`] is called.
    type Path = unsafe fn(*const u8, *mut u8, usize);

    /// Each way of copying this machine has: [`copy`] and the loops it may take.
    fn paths() -> Vec<(&'static str, Path)> {
        let mut paths: Vec<(&str, Path)> = vec![("copy", copy)];
        #[cfg(target_arch = "x86_64")]
        {
            paths.push(("sse2", x86_64::copy_sse2));
            if std::is_x86_feature_detected!("avx2") {
                paths.push(("avx2", x86_64::copy_avx2));
            }
        }
        paths
    }

    /// Copies `len` bytes from `src_at` in one buffer to `dst_at` in another with each path,
    /// and checks every byte and that nothing around the target moved.
    fn check(len: usize, src_at: usize, dst_at: usize) {
        let src: Vec<u8> = (0..src_at + len).map(|i| (i * 7 + 3) as u8).collect();
        for (name, path) in paths() {
            let mut dst = vec![0xeeu8; dst_at + len + 64];
            // SAFETY: both ranges lie inside their own vectors, which do not overlap; the AVX2
            // path is in the list only where the CPU has AVX2.
            unsafe { path(src.as_ptr().add(src_at), dst.as_mut_ptr().add(dst_at), len) };
            assert!(dst[..dst_at].iter().all(|&b| b == 0xee), "{name}: bytes before the target changed");
            assert_eq!(&dst[dst_at..dst_at + len], &src[src_at..], "{name}: {len} bytes from {src_at} to {dst_at}");
            assert!(dst[dst_at + len..].iter().all(|&b| b == 0xee), "{name}: bytes after the target changed");
        }
    }

    #[test]
    fn every_length_round_the_loop_steps_and_the_threshold() {
        for len in (0..600).chain(REP_MOVSB_FROM - 70..REP_MOVSB_FROM + 300) {
            check(len, 3, 5);
        }
    }

    #[test]
    fn every_relative_alignment() {
        for src_at in 0..64 {
            for dst_at in [0, 1, 17, 32, 63] {
                check(REP_MOVSB_FROM + 129, src_at, dst_at);
            }
        }
    }

    #[test]
    fn copies_within_one_buffer_at_chosen_distances() {
        // One buffer, so that the distance from source to destination is chosen: inside and
        // outside the window where `rep movsb` is slow (the loop must not care).
        let len = REP_MOVSB_FROM + 300;
        for ahead in [0, 1, 16, 31, 32, 4095] {
            for (name, path) in paths() {
                let mut buf: Vec<u8> = (0..4 * 4096 + len).map(|i| (i * 5 + 1) as u8).collect();
                let (src_at, dst_at) = (100, 100 + 2 * 4096 + ahead);
                assert!(dst_at + len <= buf.len() && src_at + len <= dst_at, "the ranges are apart");
                let before = buf.clone();
                let base = buf.as_mut_ptr();
                // SAFETY: both ranges lie inside `buf` and do not overlap (asserted); the AVX2
                // path is in the list only where the CPU has AVX2.
                unsafe { path(base.add(src_at), base.add(dst_at), len) };
                assert_eq!(&buf[dst_at..dst_at + len], &before[src_at..src_at + len], "{name}, {ahead} past");
                assert_eq!(&buf[..dst_at], &before[..dst_at], "{name}: bytes before the target changed");
                assert_eq!(&buf[dst_at + len..], &before[dst_at + len..], "{name}: bytes after the target changed");
            }
        }
    }

    #[test]
    fn large_copies() {
        check(1 << 20, 16, 0);
        check((1 << 20) + 77, 1, 40);
    }
}
