//! The machine the benchmark ran on, and the one resource limit it must raise.

use std::io;

use anyhow::Context as _;
use serde_json::{json, Value};

/// What a reader needs to know to compare figures from another run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs online.
    pub cpus: usize,
    /// The first `model name` in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
}

impl Machine {
    /// This machine, as far as `/proc` tells.
    pub fn describe() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        // SAFETY: sysconf only reads a configuration value.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Self {
            cpus: usize::try_from(online).unwrap_or(0),
            cpu_model,
            kernel,
        }
    }

    /// One line: "2 CPUs (AMD EPYC), Linux 6.1.0".
    pub fn line(&self) -> String {
        format!(
            "{} CPUs ({}), Linux {}",
            self.cpus, self.cpu_model, self.kernel
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "cpus": self.cpus,
            "cpu_model": self.cpu_model,
            "kernel": self.kernel,
        })
    }
}

/// Raises this process's soft limit on open files to the hard limit, and returns it.
///
/// Ten thousand sockets need more than the usual soft limit of 1024; the servers this
/// process starts inherit the raised limit.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit from the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
    }
    Ok(limit.rlim_cur)
}
