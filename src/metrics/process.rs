//! The usual `process_*` metrics (resident and virtual memory, open and allowed descriptors,
//! CPU time, start time), which prometheus-client does not provide, read from `/proc/self` at
//! each scrape on Linux; elsewhere there are none.
//!
//! Each file read is small and bounded (16 KiB at most); a file that cannot be read leaves
//! its metrics out of that scrape rather than failing it.

use std::fmt;
use std::io::Read;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The most read of one `/proc/self` file: `stat` and `status` are a few KiB.
const MAX_PROC_FILE: u64 = 16 * 1024;

/// Clock ticks per second in `/proc/*/stat`: the kernel's USER_HZ, 100 on every Linux
/// architecture (fixed by the ABI, whatever the kernel's own HZ).
const USER_HZ: f64 = 100.0;

/// Whether this platform has the process metrics.
pub fn supported() -> bool {
    cfg!(target_os = "linux")
}

/// The `process_*` metrics, read at each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    /// When the process started (Unix seconds), worked out once.
    start_time: Option<f64>,
}

impl ProcessCollector {
    /// Reads the start time now; the rest is read at each scrape.
    pub fn new() -> ProcessCollector {
        ProcessCollector {
            start_time: start_time(),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

/// What one scrape reads.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let reading = read();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                reading.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                reading.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                reading.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit).",
                reading.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Some(seconds) = reading.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        if let Some(start) = self.start_time {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// At most [`MAX_PROC_FILE`] bytes of `/proc/self/<name>`.
fn proc_self(name: &str) -> Option<String> {
    read_bounded(&format!("/proc/self/{name}"))
}

/// At most [`MAX_PROC_FILE`] bytes of the file at `path`.
fn read_bounded(path: &str) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

fn read() -> Reading {
    let mut reading = Reading::default();
    if let Some(status) = proc_self("status") {
        reading.resident_bytes = status_kib(&status, "VmRSS:").map(|kib| kib * 1024);
        reading.virtual_bytes = status_kib(&status, "VmSize:").map(|kib| kib * 1024);
    }
    if let Some(stat) = proc_self("stat") {
        reading.cpu_seconds = stat_fields(&stat).and_then(|fields| {
            // utime and stime: fields 14 and 15 of proc_pid_stat(5), 0 and 1 after `state`'s
            // 12 below.
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user.saturating_add(system) as f64 / USER_HZ)
        });
    }
    reading.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| i64::try_from(entries.count()).unwrap_or(i64::MAX));
    reading.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| i64::try_from(soft).unwrap_or(i64::MAX));
    reading
}

/// The number of KiB on the line of `/proc/self/status` that starts with `key`.
fn status_kib(status: &str, key: &str) -> Option<i64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces and
/// parentheses: it ends at the last `)`), starting with `state` (field 3).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, after) = stat.rsplit_once(')')?;
    Some(after.split_whitespace().collect())
}

/// When this process started (Unix seconds): now, less the system's uptime, plus the uptime
/// at which the process started (`starttime`, field 22 of `/proc/self/stat`, in ticks). Read
/// once: `/proc/stat`'s `btime` sits after lines that grow with the machine.
fn start_time() -> Option<f64> {
    let uptime: f64 = read_bounded("/proc/uptime")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = proc_self("stat")?;
    let started_ticks: u64 = stat_fields(&stat)?.get(19)?.parse().ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(now - uptime + started_ticks as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_name_may_hold_spaces_and_parentheses() {
        let stat = "42 (imds (tun) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 \
                    12345 1000000 300";
        let fields = stat_fields(stat).expect("a stat line");
        assert_eq!(fields[0], "S");
        assert_eq!(fields[11], "250", "utime");
        assert_eq!(fields[12], "50", "stime");
        assert_eq!(fields[19], "12345", "starttime");
    }

    #[test]
    fn status_lines_give_kibibytes() {
        let status = "Name:\timds-tun\nVmSize:\t  123456 kB\nVmRSS:\t    7890 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(7890));
        assert_eq!(status_kib(status, "VmSize:"), Some(123_456));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_alive() {
        let reading = read();
        assert!(reading.resident_bytes.is_some_and(|bytes| bytes > 0));
        assert!(reading.open_fds.is_some_and(|fds| fds >= 3));
        assert!(reading.cpu_seconds.is_some());
        let started = start_time().expect("a start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
    }
}
