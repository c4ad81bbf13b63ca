//! `--pin` / `--pin-same`: put the client and the server on different CPUs, or on one. On these
//! 2-vCPU VMs an unpinned pair sometimes shares one vCPU (3–12 µs round trips) and sometimes not
//! (50–90 µs), and may switch between runs, so unpinned figures mix two regimes; pinning chooses
//! the regime that is measured.

/// The CPUs this process may run on (Linux), lowest first.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, zeroed is an empty set; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

/// Pins the calling thread, and so every thread it starts afterwards, to `cpu`.
#[cfg(target_os = "linux")]
pub fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as above; the set is initialised before it is passed to the kernel.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Not available off Linux.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Not available off Linux.
#[cfg(not(target_os = "linux"))]
pub fn pin_to(_: usize) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "CPU pinning is implemented for Linux only"))
}
