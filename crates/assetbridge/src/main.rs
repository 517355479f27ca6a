//! `assetbridge`: keeps a DAM and Akeneo's Asset Manager in step.
//!
//! The binary's edge: command line, configuration, wiring of the parts, exit codes
//! (0 ok · 1 fatal · 2 usage or configuration error · 3 finished but some assets failed).

mod admin;
mod commands;
mod config;
mod exit;
mod logging;
mod progress;
mod routing_config;
mod schedule;
mod structure_config;
mod wiring;

use std::process::ExitCode;

/// The binary's allocator: mimalloc (see [`configure_allocators`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use crate::exit::Failure;

#[derive(Parser)]
#[command(
    name = "assetbridge",
    version,
    about = "Keeps a DAM and Akeneo's Asset Manager in step (DAM → PIM assets, PIM → DAM metadata).",
    long_about = "Keeps a DAM and Akeneo's Asset Manager in step.\n\n\
DAM assets that concern products become Akeneo assets (media link or file, mapped metadata), created, \
updated and deleted as the DAM changes; changes arrive by polling the DAM's API, by webhooks and by queues.\n\n\
Start with `assetbridge demo`: it runs everything against built-in emulators.\n\n\
Exit codes: 0 ok · 1 fatal error · 2 usage or configuration error · 3 finished, but some assets failed \
(see `assetbridge dlq list`).",
    after_help = "Examples:\n  assetbridge demo\n  assetbridge check --config assetbridge.toml\n  assetbridge sync --config assetbridge.toml\n  assetbridge run --config assetbridge.toml"
)]
struct Cli {
    /// Log format: human (default) or json. Overrides `[log] format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<config::LogFormat>,
    /// Log filter, e.g. `debug` or `assetbridge=debug,info`. Overrides `[log] level`;
    /// `RUST_LOG` overrides both.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Demo(commands::demo::DemoArgs),
    Sync(commands::sync::SyncArgs),
    Plan(commands::plan::PlanArgs),
    Run(commands::run::RunArgs),
    Check(commands::check::CheckArgs),
    Emulate(commands::emulate::EmulateArgs),
    Dlq(commands::dlq::DlqArgs),
    Status(commands::status::StatusArgs),
    Structure(commands::structure::StructureArgs),
}

fn main() -> ExitCode {
    configure_allocators();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Emulate(_)) {
        mimalloc_for_emulators();
    }
    if let Err(code) = check_sqlite_page_cache() {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let log = logging::LogArgs {
        format: cli.log_format,
        level: cli.log_level,
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(a) => commands::demo::run(a, log).await,
            Command::Sync(a) => commands::sync::run(a, log).await,
            Command::Plan(a) => commands::plan::run(a, log).await,
            Command::Run(a) => commands::run::run(a, log).await,
            Command::Check(a) => commands::check::run(a, log).await,
            Command::Emulate(a) => commands::emulate::run(a, log).await,
            Command::Dlq(a) => commands::dlq::run(a, log).await,
            Command::Status(a) => commands::status::run(a, log).await,
            Command::Structure(a) => commands::structure::run(a, log).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

pub type CliResult = Result<ExitCode, Failure>;

/// Two allocators live in the process: Rust's allocations go to mimalloc (the global allocator
/// above), SQLite's (statements, records; its page caches only beyond the region of
/// [`configure_sqlite`]) to glibc's malloc.
///
/// **mimalloc** because the connector allocates and frees many small values per asset (JSON
/// values, strings, maps) and a few large buffers per page: with glibc's malloc, `malloc`,
/// `free` and the consolidation that each large request triggers were ≈ 38 % of the async
/// workers' CPU in a profile of the zero-latency benchmark, and mimalloc's thread-local free
/// lists do the same work for less (measured in the README's Performance section). See
/// [`configure_mimalloc`] for the two options that keep its resident memory as low as glibc's.
///
/// **glibc** gives each thread that allocates concurrently an arena of its own (up to 8 per
/// core), and each keeps the memory it has freed: the 1 000 000-asset benchmark's resident
/// memory grew in arena-sized steps. Two arenas keep it flat at no measured throughput cost —
/// the same as `MALLOC_ARENA_MAX=2`, which, when set, still wins.
fn configure_allocators() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only adjusts allocator parameters; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// The mimalloc options [`configure_mimalloc`] sets to 0, each with the environment variable
/// that, when set, wins: mimalloc 2's `mi_option_purge_delay` and `mi_option_arena_eager_commit`.
const MIMALLOC_OPTIONS: [(libmimalloc_sys::mi_option_t, &std::ffi::CStr); 2] = [
    (MI_OPTION_PURGE_DELAY, c"MIMALLOC_PURGE_DELAY"),
    (4, c"MIMALLOC_ARENA_EAGER_COMMIT"),
];

/// Runs before `main` (an ELF constructor), before the first Rust allocation:
/// [`configure_mimalloc`], then [`configure_sqlite`]. mimalloc's own constructor (priority 101)
/// has already run and read the environment.
#[used]
#[link_section = ".init_array"]
static BEFORE_MAIN: extern "C" fn() = before_main;

extern "C" fn before_main() {
    configure_mimalloc();
    configure_sqlite();
}

/// Why [`configure_sqlite`] installed no region, if it failed (reported by `main`).
static SQLITE_PAGE_CACHE_ERROR: std::sync::OnceLock<assetbridge_store::page_cache::PageCacheError> =
    std::sync::OnceLock::new();

/// SQLite's page caches get one fixed region ([`assetbridge_store::page_cache`]: 16 MiB unless
/// `ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB` says otherwise), so that the pages every reader's cache
/// drops and refills after each write come from fixed slots, not from glibc's arenas — whose
/// fragmentation kept the 1 000 000-asset benchmark's resident memory growing while its live
/// heap was level. SQLite reads this configuration only before its first use: hence here.
extern "C" fn configure_sqlite() {
    // SAFETY: before `main`: no thread exists, SQLite is not initialised, nothing changes the
    // environment.
    if let Err(e) = unsafe { assetbridge_store::page_cache::configure_from_env() } {
        let _ = SQLITE_PAGE_CACHE_ERROR.set(e);
    }
}

/// `ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB` that is not a number is a configuration error (exit 2);
/// a region the system or SQLite refused only costs memory: a warning, and SQLite's default.
fn check_sqlite_page_cache() -> Result<(), ExitCode> {
    use assetbridge_store::page_cache::PageCacheError;
    match SQLITE_PAGE_CACHE_ERROR.get() {
        Some(e @ PageCacheError::InvalidSize(_)) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
        Some(e) => {
            eprintln!("warning: {e}; SQLite's pages come from malloc");
            Ok(())
        }
        None => Ok(()),
    }
}

/// mimalloc is told to give freed memory back to the OS at once (`purge_delay = 0`; default
/// 10 ms) and to commit its arenas on demand (`arena_eager_commit = 0`; default: eagerly on
/// Linux): with its defaults the benchmarks' peak RSS was ≈ 40 % higher, with these it matches
/// glibc's. The environment (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`), when set,
/// wins. Allocates nothing (C strings, `getenv`).
fn configure_mimalloc() {
    for (option, env) in MIMALLOC_OPTIONS {
        // SAFETY: getenv reads the environment, which nothing modifies before `main`; setting
        // one of mimalloc's runtime options before any thread exists is what its API asks.
        unsafe {
            if libc::getenv(env.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, 0);
            }
        }
    }
}

/// mimalloc 2's `mi_option_purge_delay`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's default purge delay (10 ms), which `emulate` restores.
const MIMALLOC_DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;

/// The emulators (`emulate`) are no part of the connector's memory budget: they give freed
/// memory back after mimalloc's default delay of 10 ms instead of at once, which spares them a
/// `madvise` and the page faults that refill the pages for most frees (≈ 9 % of the emulators'
/// CPU in the zero-latency benchmark). `MIMALLOC_PURGE_DELAY`, when set, still wins. Called
/// before the runtime starts its threads.
fn mimalloc_for_emulators() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's runtime options before other threads exist.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, MIMALLOC_DEFAULT_PURGE_DELAY_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constructor ran before this test binary's first allocation: both options are 0 (the
    /// values mimalloc would otherwise use are 10 and 2), unless the environment sets them.
    #[test]
    fn mimalloc_is_configured_before_main() {
        for (option, env) in MIMALLOC_OPTIONS {
            let env = env.to_str().unwrap();
            if std::env::var_os(env).is_some() {
                continue;
            }
            // SAFETY: reads one of mimalloc's options.
            let value = unsafe { libmimalloc_sys::mi_option_get(option) };
            assert_eq!(value, 0, "{env}");
        }
        // `emulate` restores the default purge delay (then this test puts 0 back).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            mimalloc_for_emulators();
            // SAFETY: reads, then resets, one of mimalloc's options.
            unsafe {
                assert_eq!(
                    libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                    MIMALLOC_DEFAULT_PURGE_DELAY_MS
                );
                libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
            }
        }
        // And the allocator in use is mimalloc: a block it allocated is one it owns.
        let block = vec![0u8; 1000];
        // SAFETY: asks mimalloc whether a pointer is in its heap.
        assert!(unsafe { libmimalloc_sys::mi_is_in_heap_region(block.as_ptr().cast()) });
    }

    /// The constructor gave SQLite its page-cache region before this test binary's first
    /// connection: a database's pages are then held in its slots (SQLite's own counter of
    /// slots in use), the region's default size unless the environment sets another.
    #[tokio::test]
    async fn sqlite_pages_come_from_the_region_configured_before_main() {
        use assetbridge_store::page_cache;
        if std::env::var_os(page_cache::ENV).is_some() {
            return;
        }
        assert!(SQLITE_PAGE_CACHE_ERROR.get().is_none());
        let slots = page_cache::usage().expect("a region").capacity;
        assert!(
            slots > 0 && slots * 4096 <= page_cache::DEFAULT_BYTES,
            "{slots}"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = assetbridge_store::Store::open(&format!(
            "sqlite://{}",
            dir.path().join("state.db").display()
        ))
        .await
        .unwrap();
        let hashes: Vec<(String, assetbridge_core::ContentHash)> = (0..2000)
            .map(|i| {
                (
                    format!("asset_{i:05}"),
                    assetbridge_core::ContentHash(format!("{i:064}")),
                )
            })
            .collect();
        store.put_hashes("images", &hashes).await.unwrap();
        let highest = page_cache::usage().expect("a region").highest;
        assert!(highest > 10, "{highest} slots used");
        store.close().await;
    }
}
