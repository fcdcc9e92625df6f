//! CPUs: pinning servers to one core and the load client to the other, and reading how
//! much CPU time a process has used.
//!
//! The machine has two cores. Pinning keeps a server and the client from trading places on
//! them mid-run, which is most of the noise a loopback benchmark has. CPU time shows who the
//! bottleneck was: a server near 100% of its core is the thing measured; a client near 100%
//! of its own means the numbers are the client's.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The core every server under test runs on.
pub const SERVER_CPU: usize = 0;

/// The core the load client runs on.
pub const CLIENT_CPU: usize = 1;

/// Percentage points of a core that may go to work other than the process pinned there
/// (loopback softirq, mostly) before a measurement counts as contended.
const CONTENTION_SLACK: f64 = 15.0;

/// Measures the CPU use of a server, the load client and their cores over a stretch of a
/// scenario.
#[derive(Debug)]
pub struct CpuMeter {
    server_pid: u32,
    server_start: Duration,
    client_start: Duration,
    cores_start: CoreTicks,
    started: Instant,
}

/// CPU use over a stretch of a scenario, each in percent of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// The server process's CPU time.
    pub server: f64,
    /// The load client's CPU time.
    pub client: f64,
    /// The server process's CPU time, as a duration.
    pub server_time: Duration,
    /// The load client's CPU time, as a duration.
    pub client_time: Duration,
    /// The server's core, whoever used it.
    pub server_core: f64,
    /// The client's core, whoever used it.
    pub client_core: f64,
}

impl CpuMeter {
    /// Starts measuring, with the server of process `server_pid`.
    pub fn start(server_pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            server_pid,
            server_start: process_time(Some(server_pid))?,
            client_start: process_time(None)?,
            cores_start: CoreTicks::now()?,
            started: Instant::now(),
        })
    }

    /// The CPU use since `start`.
    pub fn stop(self) -> anyhow::Result<CpuUse> {
        let server = process_time(Some(self.server_pid))?.saturating_sub(self.server_start);
        let client = process_time(None)?.saturating_sub(self.client_start);
        let cores = CoreTicks::now()?.busy_since(&self.cores_start);
        let elapsed = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let core = |cpu: usize| 100.0 * cores.get(cpu).copied().unwrap_or(0.0);
        Ok(CpuUse {
            server: 100.0 * server.as_secs_f64() / elapsed,
            client: 100.0 * client.as_secs_f64() / elapsed,
            server_time: server,
            client_time: client,
            server_core: core(SERVER_CPU),
            client_core: core(CLIENT_CPU),
        })
    }
}

impl CpuUse {
    /// Says so when other processes competed with the server or the client for its core:
    /// the figures measured then are noise.
    pub fn contention(&self) -> Option<String> {
        let others_on_server = self.server_core - self.server;
        let others_on_client = self.client_core - self.client;
        (others_on_server > CONTENTION_SLACK || others_on_client > CONTENTION_SLACK).then(|| {
            format!(
                "other work used {others_on_server:.0}% of the server's core and \
                 {others_on_client:.0}% of the client's: this measurement is noise"
            )
        })
    }
}

/// Pins the calling thread, and every thread it starts afterwards, to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    set_affinity(&cpu_set(cpu))
}

/// Makes `command` start pinned to `cpu`, and be killed when this process dies.
///
/// The kill matters when this process is killed outright (no `Drop` runs then): a server
/// left behind would hold its port and a core through the next run.
pub fn pin_child(command: &mut Command, cpu: usize) {
    let set = cpu_set(cpu);
    let pre_exec = move || {
        set_affinity(&set)?;
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on the calling process; it is
        // async-signal-safe, so it may run between fork and exec.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure makes two raw syscalls on values it owns: no allocation, no lock,
    // nothing that is unsafe between fork and exec.
    unsafe {
        command.pre_exec(pre_exec);
    }
}

fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bitmask, for which all zeroes is the empty set, and
    // CPU_SET only writes the bit of `cpu` inside it (the index is bounds-checked).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t and the size passed is its size; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time (user + system, all threads) used so far by process `pid`, or by this process
/// when `pid` is `None`.
pub fn process_time(pid: Option<u32>) -> anyhow::Result<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; utime and stime are
    // fields 14 and 15, so the 12th and 13th after the name.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no command name"))?;
    let mut fields = after_name.split_whitespace().skip(11);
    let mut ticks = || -> anyhow::Result<u64> {
        let field = fields
            .next()
            .with_context(|| format!("{path}: too few fields"))?;
        field
            .parse()
            .with_context(|| format!("{path}: CPU time {field:?} is not a number"))
    };
    let (user, system) = (ticks()?, ticks()?);
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = u64::try_from(ticks_per_second)
        .ok()
        .filter(|&hz| hz > 0)
        .context("sysconf(_SC_CLK_TCK) failed")?;
    Ok(Duration::from_secs_f64(
        (user + system) as f64 / ticks_per_second as f64,
    ))
}

/// Busy and total time of every CPU since boot, in clock ticks, from `/proc/stat`.
///
/// Unlike a process's CPU time, a core's busy time includes the softirq work of loopback
/// TCP and every other process that ran there: two snapshots show whether a core was
/// saturated, and whether the process measured had it to itself.
#[derive(Debug, Clone)]
pub struct CoreTicks(Vec<(u64, u64)>);

impl CoreTicks {
    /// The current snapshot.
    pub fn now() -> anyhow::Result<Self> {
        let path = "/proc/stat";
        let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        stat.lines()
            .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
            .map(|line| {
                let ticks = line
                    .split_whitespace()
                    .skip(1)
                    .map(str::parse::<u64>)
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("{path}: unreadable line {line:?}"))?;
                // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
                let total: u64 = ticks.iter().take(8).sum();
                let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
                Ok((total.saturating_sub(idle), total))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    /// How busy each CPU was, from 0 to 1, between `earlier` and this snapshot.
    pub fn busy_since(&self, earlier: &CoreTicks) -> Vec<f64> {
        earlier
            .0
            .iter()
            .zip(&self.0)
            .map(|(&(busy0, total0), &(busy1, total1))| {
                let total = total1.saturating_sub(total0);
                if total == 0 {
                    0.0
                } else {
                    busy1.saturating_sub(busy0) as f64 / total as f64
                }
            })
            .collect()
    }
}

/// Waits, up to `limit`, until process `pid` uses less than [`QUIET_PERCENT`] of a core
/// over [`QUIET_WINDOW`]: a server still tearing down ten thousand sockets from one
/// scenario would otherwise compete with the next server on its core.
pub async fn wait_until_quiet(pid: u32, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let before = process_time(Some(pid))?;
        tokio::time::sleep(QUIET_WINDOW).await;
        let used = process_time(Some(pid))?.saturating_sub(before);
        let percent = 100.0 * used.as_secs_f64() / QUIET_WINDOW.as_secs_f64();
        if percent < QUIET_PERCENT || started.elapsed() >= limit {
            return Ok(());
        }
    }
}

/// Below this share of a core, a server counts as quiet.
const QUIET_PERCENT: f64 = 5.0;

/// How long a server's CPU use is watched to tell whether it is quiet.
const QUIET_WINDOW: Duration = Duration::from_millis(50);

/// Waits, up to `limit`, until every core is less than `threshold` (0 to 1) busy over
/// [`CORE_WINDOW`], and returns how busy they were last: on a shared machine, a measurement
/// that starts while someone else builds is noise from its first second. Called between
/// runs, when the servers under test are idle, so whatever keeps a core busy is other work.
pub async fn wait_for_quiet_cores(threshold: f64, limit: Duration) -> anyhow::Result<Vec<f64>> {
    let started = Instant::now();
    loop {
        let before = CoreTicks::now()?;
        tokio::time::sleep(CORE_WINDOW).await;
        let busy = CoreTicks::now()?.busy_since(&before);
        if busy.iter().all(|&fraction| fraction < threshold) || started.elapsed() >= limit {
            return Ok(busy);
        }
    }
}

/// How long the cores are watched to tell whether they are quiet.
const CORE_WINDOW: Duration = Duration::from_millis(500);
