//! What the benches read about their own process from /proc (Linux): memory figures from
//! /proc/self/status and CPU time from /proc/self/stat
//! (and /proc/thread-self/stat for one thread's). Elsewhere each reads as `None`.
#![allow(dead_code)] // each bench uses the part it needs

/// A field of /proc/self/status in KiB, e.g. `status_kib("VmHWM:")` (peak resident set size).
pub fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The same, in MiB (0 when unknown).
pub fn status_mib(key: &str) -> f64 {
    status_kib(key).map_or(0.0, |k| k as f64 / 1024.0)
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> Option<f64> {
    stat_cpu_seconds("/proc/self/stat")
}

/// CPU seconds (user + system) the calling thread has used so far.
pub fn thread_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds("/proc/thread-self/stat")
}

/// utime + stime of a /proc `stat` file, in seconds.
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
