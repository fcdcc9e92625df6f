//! A server process's resident memory, read from `/proc/PID/status`.

use anyhow::Context as _;

/// A process's resident memory, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// VmRSS: everything resident.
    pub rss: u64,
    /// VmHWM: the most that was ever resident (the peak of VmRSS).
    pub peak: u64,
    /// RssAnon: the resident heap, stacks and other anonymous pages.
    pub anon: u64,
}

/// VmRSS, VmHWM and RssAnon of process `pid`, from `/proc/PID/status`.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("{path}: no {name}"))?;
        let kilobytes = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{path}: unreadable line {line:?}"))?;
        Ok(kilobytes * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
        anon: field("RssAnon:")?,
    })
}
