//! Child processes that cannot outlive the harness, and what they cost.
//!
//! Every child is started with `PR_SET_PDEATHSIG = SIGKILL` (the kernel kills it if the harness
//! dies, even by `SIGKILL`), stays in the harness's process group (Ctrl-C in a terminal reaches
//! it too), and is owned by a [`Proc`] guard that kills and reaps it on drop (errors and panics
//! unwind through the guards). The harness's own `SIGINT`/`SIGTERM` only set a flag
//! ([`interrupted`]) that every wait loop checks, so the guards and the temporary directory are
//! cleaned up on Ctrl-C as well.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes `SIGINT` and `SIGTERM` set the [`interrupted`] flag instead of killing the harness.
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Whether the harness was asked to stop (Ctrl-C, `SIGTERM`).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails when the harness was asked to stop.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Where a child's stdout goes.
#[derive(Debug, Clone, Copy)]
pub enum Out<'a> {
    /// A pipe, read with [`Proc::wait_for_line`].
    Pipe,
    /// A file of its own (appended).
    File(&'a Path),
}

/// A child process killed (SIGKILL) and reaped when dropped, unless already reaped.
pub struct Proc {
    name: String,
    child: Child,
    reaped: bool,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Proc {
    /// Starts `cmd` with stdin closed, stderr appended to `log`, stdout as `stdout` says, and
    /// the parent-death signal set.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, stdout: Out<'_>) -> Result<Self> {
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))
        };
        let err = open(log)?;
        let out = match stdout {
            Out::Pipe => Stdio::piped(),
            Out::File(p) => Stdio::from(open(p)?),
        };
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::from(err));
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The harness died between fork and prctl: do not run orphaned.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            reaped: false,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the child has used so far (0 when it cannot be read).
    pub fn cpu_s(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Waits (bounded) for a line of the child's piped stdout that contains `marker` and
    /// returns it; later output is drained in the background.
    pub fn wait_for_line(&mut self, marker: &str, within: Duration) -> Result<String> {
        let stdout = self.child.stdout.take().context("stdout is not piped")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the child never blocks.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + within;
        loop {
            check_interrupted()?;
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                bail!("{} exited ({status}) before it was ready", self.name);
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.contains(marker) => return Ok(line),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{} closed its output before it was ready", self.name)
                }
            }
            if Instant::now() > deadline {
                bail!("{} not ready within {} s", self.name, within.as_secs_f64());
            }
        }
    }

    /// Asks the child to stop (`SIGTERM`), waits up to `grace`, then kills it.
    pub fn stop(mut self, grace: Duration) {
        if self.reaped {
            return;
        }
        // SAFETY: plain syscall on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.reaped = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drop kills and reaps.
    }

    /// Waits for the child to exit, at most until `deadline`, sampling its resident memory every
    /// `sample_every`; returns its exit status, resource usage and the samples. Past the deadline
    /// (or on Ctrl-C) the child is killed and an error returned.
    pub fn wait_measured(mut self, deadline: Instant, sample_every: Duration) -> Result<Exited> {
        let pid = self.child.id() as libc::pid_t;
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut next_sample = started;
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: an all-zero rusage is a valid value to be overwritten.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: waits for our own child, writing into the locals above.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == pid {
                let ended = Instant::now();
                self.reaped = true;
                let exit_code = if libc::WIFEXITED(status) {
                    Some(libc::WEXITSTATUS(status))
                } else {
                    None
                };
                let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
                return Ok(Exited {
                    exit_code,
                    signal,
                    wall: ended - started,
                    user: timeval(usage.ru_utime),
                    sys: timeval(usage.ru_stime),
                    max_rss_kb: usage.ru_maxrss as u64,
                    samples,
                });
            }
            if r < 0 {
                bail!(
                    "waiting for {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
            let now = Instant::now();
            if now >= next_sample {
                if let Some(mut s) = read_status(self.child.id()) {
                    s.at = (now - started).as_secs_f64();
                    samples.push(s);
                }
                next_sample = now + sample_every;
            }
            check_interrupted()?;
            if now > deadline {
                bail!(
                    "{} did not finish within {:.0} s; killed",
                    self.name,
                    (deadline - started).as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

/// `VmRSS`, `VmHWM` and `RssAnon` (kB) from `/proc/<pid>/status` (`at` left at 0).
fn read_status(pid: u32) -> Option<RssSample> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(RssSample {
        at: 0.0,
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
        anon_kb: field("RssAnon:").unwrap_or(0),
    })
}

/// One reading of the child's memory.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RssSample {
    /// Seconds since the child started being watched.
    pub at: f64,
    /// Resident set size, kB.
    pub rss_kb: u64,
    /// Peak resident set size so far, kB.
    pub hwm_kb: u64,
    /// Anonymous resident memory (heap, stacks), kB; the rest of the RSS is file-backed or
    /// shared memory (the binary, SQLite's mapped WAL index).
    pub anon_kb: u64,
}

/// How a measured child ended.
#[derive(Debug, Clone)]
pub struct Exited {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall: Duration,
    /// User CPU time (`ru_utime`).
    pub user: Duration,
    /// System CPU time (`ru_stime`).
    pub sys: Duration,
    /// Peak resident set size from `wait4` (`ru_maxrss`, kB on Linux).
    pub max_rss_kb: u64,
    pub samples: Vec<RssSample>,
}

/// Min and max RSS (kB) of the samples taken after `warmup` (a share of the run, 0–1).
pub fn rss_after_warmup(samples: &[RssSample], wall_secs: f64, warmup: f64) -> Option<(u64, u64)> {
    let from = wall_secs * warmup;
    let after = samples.iter().filter(|s| s.at >= from).map(|s| s.rss_kb);
    let min = after.clone().min()?;
    let max = after.max()?;
    Some((min, max))
}

/// User + system CPU seconds of a running process, from `/proc/<pid>/stat` (0 when it cannot
/// be read).
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) end at `)`.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        (dir, p)
    }

    fn alive(pid: u32) -> bool {
        // A reaped child has no /proc entry (a zombie would still have one).
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn a_dropped_guard_kills_and_reaps_its_child() {
        let (_d, log) = log();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = Proc::spawn("sleep", cmd, &log, Out::File(&log)).unwrap();
        let pid = p.child.id();
        assert!(alive(pid));
        drop(p);
        assert!(!alive(pid), "child {pid} survived its guard");
    }

    #[test]
    fn measured_wait_reports_exit_code_cpu_and_memory() {
        let (_d, log) = log();
        let mut cmd = Command::new("sh");
        // Burn a little CPU, then exit 3.
        cmd.args([
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
        ]);
        let p = Proc::spawn("sh", cmd, &log, Out::File(&log)).unwrap();
        let e = p
            .wait_measured(
                Instant::now() + Duration::from_secs(30),
                Duration::from_millis(1),
            )
            .unwrap();
        assert_eq!(e.exit_code, Some(3));
        assert!(e.user + e.sys > Duration::ZERO);
        assert!(e.max_rss_kb > 0);
        assert!(e.wall > Duration::ZERO);
    }

    #[test]
    fn a_child_past_its_deadline_is_killed() {
        let (_d, log) = log();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = Proc::spawn("sleep", cmd, &log, Out::File(&log)).unwrap();
        let pid = p.child.id();
        let t = Instant::now();
        let e = p
            .wait_measured(
                Instant::now() + Duration::from_millis(200),
                Duration::from_millis(50),
            )
            .unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(!alive(pid));
    }

    #[test]
    fn ready_line_is_found_and_early_exit_is_an_error() {
        let (_d, log) = log();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo starting; echo 'X on http://127.0.0.1:1'; sleep 30",
        ]);
        let mut p = Proc::spawn("sh", cmd, &log, Out::Pipe).unwrap();
        let line = p
            .wait_for_line(" on http://", Duration::from_secs(10))
            .unwrap();
        assert_eq!(line, "X on http://127.0.0.1:1");
        p.stop(Duration::from_secs(5));

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo nope; exit 1"]);
        let mut p = Proc::spawn("sh", cmd, &log, Out::Pipe).unwrap();
        let e = p
            .wait_for_line(" on http://", Duration::from_secs(10))
            .unwrap_err();
        assert!(
            e.to_string().contains("exited") || e.to_string().contains("closed"),
            "{e}"
        );
    }

    #[test]
    fn warmup_window_of_samples() {
        let s = |at, rss_kb| RssSample {
            at,
            rss_kb,
            hwm_kb: rss_kb,
            anon_kb: rss_kb,
        };
        let samples = [s(0.0, 5), s(1.0, 50), s(3.0, 40), s(9.0, 45)];
        assert_eq!(rss_after_warmup(&samples, 10.0, 0.2), Some((40, 45)));
        assert_eq!(rss_after_warmup(&samples, 10.0, 0.0), Some((5, 50)));
        assert_eq!(rss_after_warmup(&[], 10.0, 0.2), None);
    }
}
