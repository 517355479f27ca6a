//! SQLite's page caches in one fixed region of memory (`SQLITE_CONFIG_PAGECACHE`).
//!
//! Without it every connection's page cache takes its pages from `malloc`, and a reader's cache
//! is emptied each time it starts a read after another connection's commit (WAL mode): at a
//! page of writes every few milliseconds, thousands of 4 KiB pages are allocated and freed per
//! second, interleaved with SQLite's small allocations. The live heap stays level (measured
//! with heaptrack on the 1 000 000-asset benchmark: 22.5–22.7 MiB from 45 s to the end) while
//! glibc's arenas, fragmented by that churn, keep growing the resident memory.
//!
//! With a region, pages come from a free list of fixed slots (last freed, first reused), so
//! the slots ever touched — the resident part — are bounded by the most pages in use at once,
//! and the region's size caps what all connections' caches hold together: when fewer than a
//! handful of slots are free, SQLite's caches recycle their own least recently used pages
//! before growing. Pages that cannot get a slot (the region is exhausted by pinned pages, or a
//! database with larger pages) still come from `malloc`, so nothing fails for want of a slot.
//!
//! SQLite reads its configuration once, before its first use in the process: [`configure`]
//! must run before any connection is opened — the binary calls it from an ELF constructor,
//! before `main`.

use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

use libsqlite3_sys as ffi;

/// The region's default size: 16 MiB. The caches the connections are configured with add up to
/// more (the writer's 8 MiB and 2 MiB for each of up to 8 readers); a reader's cache is emptied
/// by every write anyway, so a shared 16 MiB keeps what is reused — the B-tree pages the writer
/// keeps updating — and caps the rest.
pub const DEFAULT_BYTES: usize = 16 << 20;

/// The environment variable that sets the region's size in MiB (`0`: no region, every page from
/// `malloc`, SQLite's default).
pub const ENV: &str = "ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB";

/// The page size the slots are cut for: SQLite's default, which assetbridge's databases use.
const PAGE_SIZE: usize = 4096;

/// The slots of the region [`configure`] installed (0: none).
static SLOTS: AtomicUsize = AtomicUsize::new(0);

/// Why [`configure`] did not install a region.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageCacheError {
    /// `ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB` is not a whole number of MiB.
    #[error("{ENV} must be a whole number of MiB, got `{0}`")]
    InvalidSize(String),
    /// The operating system refused the memory (`mmap`).
    #[error("cannot reserve {0} bytes for SQLite's page cache")]
    NoMemory(usize),
    /// SQLite refused the configuration: it was already initialised in this process.
    #[error("SQLite refused its page-cache configuration (code {0}): it is already in use")]
    Refused(c_int),
}

/// [`ENV`] as a C string, for reading the environment before `main`.
const ENV_C: &std::ffi::CStr = c"ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB";

/// [`configure`] with the size [`ENV`] gives (default [`DEFAULT_BYTES`]). Allocates nothing
/// unless the value is invalid, so it can run in a constructor before the allocator is ready.
///
/// # Safety
///
/// As [`configure`]; and no thread may be changing the environment.
pub unsafe fn configure_from_env() -> Result<usize, PageCacheError> {
    // SAFETY (caller): nothing modifies the environment meanwhile.
    let value = unsafe { libc::getenv(ENV_C.as_ptr()) };
    let value = (!value.is_null())
        // SAFETY: getenv returned a NUL-terminated string that lives as long as the environment.
        .then(|| unsafe { std::ffi::CStr::from_ptr(value) }.to_string_lossy());
    let bytes = bytes_from_env(value.as_deref())?;
    // SAFETY (caller).
    unsafe { configure(bytes) }
}

/// The region's size from the environment's value of [`ENV`] (`None`: not set).
pub fn bytes_from_env(value: Option<&str>) -> Result<usize, PageCacheError> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_BYTES),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .and_then(|mib| mib.checked_mul(1 << 20))
            .ok_or_else(|| PageCacheError::InvalidSize(v.to_owned())),
    }
}

/// Gives SQLite a page-cache region of `bytes` (rounded down to whole slots; `0` does nothing).
/// Returns the number of slots.
///
/// The region is reserved with `mmap` and never given back (it lives as long as the process);
/// its pages become resident only when a slot is first used.
///
/// # Safety
///
/// Must be called before SQLite is initialised — before the first connection of the process is
/// opened, while no other thread uses SQLite — and at most once.
pub unsafe fn configure(bytes: usize) -> Result<usize, PageCacheError> {
    if bytes == 0 {
        return Ok(0);
    }
    let mut header: c_int = 0;
    // SAFETY (caller): SQLite is not initialised yet; this query writes one int.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE_HDRSZ, &mut header) };
    if rc != ffi::SQLITE_OK {
        return Err(PageCacheError::Refused(rc));
    }
    let slot = (PAGE_SIZE + header.max(0) as usize).next_multiple_of(8);
    let slots = bytes / slot;
    if slots == 0 {
        return Ok(0);
    }
    let len = slots * slot;
    // SAFETY: an anonymous private mapping; nothing else refers to it.
    let region = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if region == libc::MAP_FAILED {
        return Err(PageCacheError::NoMemory(len));
    }
    let (slot_c, slots_c) = (
        c_int::try_from(slot).map_err(|_| PageCacheError::NoMemory(len))?,
        c_int::try_from(slots).map_err(|_| PageCacheError::NoMemory(len))?,
    );
    // SAFETY (caller): SQLite is not initialised yet; the region outlives every connection (it
    // is never unmapped) and is `slots * slot` bytes, 8-byte aligned (page aligned).
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PAGECACHE, region, slot_c, slots_c) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: the mapping made above, not handed to anyone.
        unsafe { libc::munmap(region, len) };
        return Err(PageCacheError::Refused(rc));
    }
    SLOTS.store(slots, Ordering::Relaxed);
    Ok(slots)
}

/// How the region is used, from SQLite's own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The region's slots (one page each).
    pub capacity: usize,
    /// Slots in use now (`SQLITE_STATUS_PAGECACHE_USED`).
    pub in_use: i64,
    /// The most slots in use at once since the process started.
    pub highest: i64,
}

/// The region's usage; `None` when no region was configured.
pub fn usage() -> Option<Usage> {
    let capacity = SLOTS.load(Ordering::Relaxed);
    if capacity == 0 {
        return None;
    }
    let (mut in_use, mut highest) = (0i64, 0i64);
    // SAFETY: a read of SQLite's global counters into two i64s.
    unsafe {
        ffi::sqlite3_status64(
            ffi::SQLITE_STATUS_PAGECACHE_USED,
            &mut in_use,
            &mut highest,
            0,
        );
    }
    Some(Usage {
        capacity,
        in_use,
        highest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_name_is_the_documented_name() {
        assert_eq!(ENV_C.to_str().unwrap(), ENV);
    }

    #[test]
    fn the_size_comes_from_the_environment_in_mib_with_a_named_default() {
        assert_eq!(bytes_from_env(None), Ok(DEFAULT_BYTES));
        assert_eq!(bytes_from_env(Some(" ")), Ok(DEFAULT_BYTES));
        assert_eq!(bytes_from_env(Some("0")), Ok(0));
        assert_eq!(bytes_from_env(Some("32")), Ok(32 << 20));
        assert_eq!(
            bytes_from_env(Some("lots")),
            Err(PageCacheError::InvalidSize("lots".into()))
        );
        assert!(bytes_from_env(Some("-1")).is_err());
    }
}
