//! Settings that come from the environment before the configuration file is read.

use std::process::{Command, Output};

fn assetbridge(page_cache_mib: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_assetbridge"))
        .args(["check", "--config", "no-such-assetbridge.toml"])
        .env("ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB", page_cache_mib)
        .output()
        .expect("the binary runs")
}

/// A page-cache size that is not a whole number of MiB stops the process before anything else,
/// with exit 2 and the variable named; `0` (no region) and a number are accepted, so the same
/// command goes on to its own error (the missing configuration file).
#[test]
fn the_sqlite_page_cache_size_is_checked_before_anything_runs() {
    let out = assetbridge("lots");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB must be a whole number of MiB, got `lots`"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("no-such-assetbridge.toml"), "{stderr}");

    for accepted in ["0", "8"] {
        let out = assetbridge(accepted);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("ASSETBRIDGE_SQLITE_PAGE_CACHE_MIB"),
            "{accepted}: {stderr}"
        );
        assert!(
            stderr.contains("no-such-assetbridge.toml"),
            "{accepted}: {stderr}"
        );
    }
}
