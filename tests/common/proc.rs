//! What the kernel says about a process: its resident memory, and this process's limit on
//! open files.

use std::time::Duration;

/// A size in KiB from `/proc/PID/status`: `field` is `VmRSS` (resident now), `VmHWM`
/// (the most ever resident) or `VmSize` (address space).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// The resident set size of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// The most process `pid` ever had resident, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// The resident set size of process `pid` once it has settled: the last of a few reads
/// `interval` apart, after two in a row agree within 1% (a process that just finished a
/// burst of work is still returning memory to the kernel for a moment).
pub async fn settled_rss_kib(pid: u32, interval: Duration) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..20 {
        tokio::time::sleep(interval).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) * 100 <= last {
            return now;
        }
        last = now;
    }
    last
}

/// Raises this process's soft limit on open files to its hard limit (a test with
/// thousands of sockets needs more than the usual 1024); the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write and read the one struct passed to them.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit),
            0,
            "getrlimit"
        );
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit");
        }
    }
    limit.rlim_cur
}

/// Asserts this process may hold `files` open files, after raising its soft limit.
pub fn need_open_files(files: u64) {
    let limit = raise_open_files_limit();
    assert!(
        limit >= files,
        "this test needs {files} open files and the hard limit is {limit}"
    );
}
