//! The copy into and out of a shared ring, which must not use `rep movsb` on x86-64.
//!
//! glibc's `memcpy` copies 2,112 bytes and more (up to a few hundred KiB) with `rep movsb` on
//! CPUs that report fast string moves (ERMS/FSRM). On the AMD EPYC machines this project runs
//! on, `rep movsb` moves about 2 GB/s instead of 35–50 when the source and destination are
//! misaligned to each other by 1 to 31 bytes modulo 64 (offsets of 0 and 32–63 run at full
//! speed): 2.0–2.3 GB/s against 33–52 for a loop of 32-byte vector loads and stores, copying
//! 32 KiB and 1 MiB at relative offsets of 1, 8 and 16 (a C loop, each figure the best of 200).
//! A ring copy's relative alignment is where the frame happens to fall in the ring against
//! where the caller's buffer happens to be, so with `memcpy` some connections moved large
//! frames (which cross in [`STEP`](super::ring::STEP)s of 32 KiB) 20 times slower than others.
//!
//! So copies from [`REP_MOVSB_FROM`] bytes up go through a loop of unaligned 32-byte (AVX2) or
//! 16-byte (SSE2) loads and stores, whose speed does not depend on alignment; shorter ones and
//! the loop's tail stay with `memcpy`, which copies them with vector moves. Other targets use
//! `memcpy` throughout.

/// The smallest copy that glibc's `memcpy` would do with `rep movsb` (its default
/// `x86_rep_movsb_threshold`, 0x840); shorter ones go to `memcpy`.
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

    /// Bytes each loop iteration moves: four vector registers' worth at a time keeps the load
    /// and store units busy without depending on one register's round trip.
    const AVX2_STEP: usize = 4 * 32;
    const SSE2_STEP: usize = 4 * 16;

    /// # Safety
    ///
    /// As [`super::copy`], and the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copy_avx2(mut src: *const u8, mut dst: *mut u8, mut len: usize) {
        while len >= AVX2_STEP {
            // SAFETY: `len >= AVX2_STEP` bytes remain in both ranges (the caller's promise for
            // the whole copy, minus what the loop has moved), so the four 32-byte loads and
            // stores stay inside them; the `u` intrinsics take any alignment.
            unsafe {
                let s = src.cast::<__m256i>();
                let d = dst.cast::<__m256i>();
                let (a, b, c, e) = (
                    _mm256_loadu_si256(s),
                    _mm256_loadu_si256(s.add(1)),
                    _mm256_loadu_si256(s.add(2)),
                    _mm256_loadu_si256(s.add(3)),
                );
                _mm256_storeu_si256(d, a);
                _mm256_storeu_si256(d.add(1), b);
                _mm256_storeu_si256(d.add(2), c);
                _mm256_storeu_si256(d.add(3), e);
                src = src.add(AVX2_STEP);
                dst = dst.add(AVX2_STEP);
            }
            len -= AVX2_STEP;
        }
        // SAFETY: the `len < AVX2_STEP` bytes left of both ranges.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }

    /// # Safety
    ///
    /// As [`super::copy`] (SSE2 is part of every x86-64 CPU).
    pub(super) unsafe fn copy_sse2(mut src: *const u8, mut dst: *mut u8, mut len: usize) {
        while len >= SSE2_STEP {
            // SAFETY: as in `copy_avx2`, with 16-byte moves.
            unsafe {
                let s = src.cast::<__m128i>();
                let d = dst.cast::<__m128i>();
                let (a, b, c, e) = (
                    _mm_loadu_si128(s),
                    _mm_loadu_si128(s.add(1)),
                    _mm_loadu_si128(s.add(2)),
                    _mm_loadu_si128(s.add(3)),
                );
                _mm_storeu_si128(d, a);
                _mm_storeu_si128(d.add(1), b);
                _mm_storeu_si128(d.add(2), c);
                _mm_storeu_si128(d.add(3), e);
                src = src.add(SSE2_STEP);
                dst = dst.add(SSE2_STEP);
            }
            len -= SSE2_STEP;
        }
        // SAFETY: the `len < SSE2_STEP` bytes left of both ranges.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A way to copy, as [`copy`] is called.
    type Path = unsafe fn(*const u8, *mut u8, usize);

    /// Copies `len` bytes from `src_at` in one buffer to `dst_at` in another with each of the
    /// paths this machine has, and checks every byte and that nothing around the target moved.
    fn check(len: usize, src_at: usize, dst_at: usize) {
        let src: Vec<u8> = (0..src_at + len).map(|i| (i * 7 + 3) as u8).collect();
        let mut paths: Vec<(&str, Path)> = vec![("copy", copy)];
        #[cfg(target_arch = "x86_64")]
        {
            paths.push(("sse2", x86_64::copy_sse2));
            if std::is_x86_feature_detected!("avx2") {
                paths.push(("avx2", x86_64::copy_avx2));
            }
        }
        for (name, path) in paths {
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
    fn large_copies() {
        check(1 << 20, 16, 0);
        check((1 << 20) + 77, 1, 40);
    }
}
