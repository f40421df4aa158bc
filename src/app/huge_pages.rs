//! Transparent huge pages for the whole process (`pipeline.transparent_huge_pages`).
//!
//! The allocator asks the kernel for huge pages on its large regions (madvise). The first touch
//! of a huge page then zeroes 2 MB in one page fault: a pipeline thread that touched fresh memory
//! (a new series' state, a growing table) was measured stalled for 5-15 ms at a time, and every
//! point queued behind it waited. The kernel's per-process switch turns them off whatever the
//! allocator asks; it applies to the memory touched from then on.

/// Allows (`enabled`) or forbids transparent huge pages for this process; the current setting.
#[cfg(target_os = "linux")]
pub fn apply(enabled: bool) -> std::io::Result<bool> {
    let disable = libc::c_ulong::from(!enabled);
    // SAFETY: prctl with PR_SET_THP_DISABLE / PR_GET_THP_DISABLE takes and returns integers.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } {
        -1 => Err(std::io::Error::last_os_error()),
        disabled => Ok(disabled == 0),
    }
}

/// Other systems: nothing to switch.
#[cfg(not(target_os = "linux"))]
pub fn apply(enabled: bool) -> std::io::Result<bool> {
    Ok(enabled)
}

/// [`apply`], with a warning when the kernel refuses.
pub fn apply_or_warn(enabled: bool) {
    match apply(enabled) {
        Ok(now) => tracing::debug!(transparent_huge_pages = now, "memory"),
        Err(e) => tracing::warn!(error = %e, enabled, "could not set transparent huge pages"),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Reads the process's huge pages of the mapping that holds `addr`, in kB.
    fn huge_kb_at(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    return kb.trim().trim_end_matches(" kB").trim().parse().unwrap();
                }
            }
        }
        0
    }

    /// A fresh region the allocator would ask huge pages for, touched once: its huge pages.
    fn touched_region_huge_kb() -> u64 {
        const LEN: usize = 8 << 20;
        // SAFETY: an anonymous private mapping, written within bounds and unmapped after.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::madvise(p, LEN, libc::MADV_HUGEPAGE);
            let bytes = p as *mut u8;
            for offset in (0..LEN).step_by(4096) {
                bytes.add(offset).write_volatile(1);
            }
            let kb = huge_kb_at(p as usize + LEN / 2);
            libc::munmap(p, LEN);
            kb
        }
    }

    #[test]
    fn switched_off_the_kernel_gives_no_huge_pages_even_when_asked() {
        let thp_available = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"));
        assert!(!apply(false).unwrap());
        assert_eq!(touched_region_huge_kb(), 0);
        assert!(apply(true).unwrap());
        if thp_available {
            // The same region gets huge pages once they are allowed (the kernel may lack free
            // 2 MB blocks: then some of the region, not none of it, is the best it can do).
            let kb = (0..3).map(|_| touched_region_huge_kb()).max().unwrap();
            assert!(kb > 0, "no huge pages with THP allowed");
        }
        apply(false).unwrap();
    }
}
