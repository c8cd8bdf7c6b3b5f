//! CPU time, context switches and memory of other processes (the servers under
//! test), read from `/proc/PID/stat` and `/proc/PID/status` and its threads'
//! `/proc/PID/task/TID/status` (Linux).

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time of all its threads, microseconds.
    pub cpu_us: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
    /// Voluntary and involuntary context switches of all its threads (those alive now).
    pub ctx_switches: u64,
}

/// Resource use of a watched process over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcUsage {
    /// Name given on the command line (`--watch-pid NAME=PID`).
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// CPU time used during the window, microseconds.
    pub cpu_us: u64,
    /// CPU time per completed request, microseconds.
    pub cpu_us_per_request: f64,
    /// Average CPU use during the window, percent of one core.
    pub cpu_percent: f64,
    /// Context switches of its threads per completed request: each is a thread that went
    /// to sleep or was preempted. Unlike CPU time it hardly varies with what else runs on
    /// the machine, so it shows wake-up costs that noisy timings hide.
    #[serde(default)]
    pub ctx_switches_per_request: f64,
    /// Resident set size at the end, KiB.
    pub rss_kib: u64,
    /// Peak resident set size at the end, KiB.
    pub hwm_kib: u64,
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses: fields after the last ')' start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14, stime field 15: indices 11 and 12 after field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` value of `/proc/PID/status` (e.g. `VmRSS`).
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    parse_status_number(status, key)
}

/// The number a `/proc/PID/status` line `key:` starts with (a unit after it is ignored).
fn parse_status_number(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` of one `status` text.
pub fn parse_status_ctx_switches(status: &str) -> u64 {
    ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
        .iter()
        .filter_map(|key| parse_status_number(status, key))
        .sum()
}

/// Context switches summed over the threads of `pid` (a thread that ended is not counted).
fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| parse_status_ctx_switches(&s))
        .sum()
}

/// Read process `pid` now.
pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    let ticks =
        parse_stat_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    Ok(ProcSample {
        cpu_us: ticks.saturating_mul(1_000_000) / clock_ticks_per_sec(),
        rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
        hwm_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
        ctx_switches: ctx_switches(pid),
    })
}

/// Usage between two samples over `window_secs` with `requests` completed.
pub fn usage(
    name: &str,
    pid: u32,
    before: ProcSample,
    after: ProcSample,
    window_secs: f64,
    requests: u64,
) -> ProcUsage {
    let cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
    let per_request = |n: u64| {
        if requests == 0 {
            0.0
        } else {
            n as f64 / requests as f64
        }
    };
    ProcUsage {
        name: name.to_owned(),
        pid,
        cpu_us,
        cpu_us_per_request: per_request(cpu_us),
        cpu_percent: if window_secs > 0.0 {
            cpu_us as f64 / (window_secs * 1e4)
        } else {
            0.0
        },
        rss_kib: after.rss_kib,
        hwm_kib: after.hwm_kib,
        ctx_switches_per_request: per_request(
            after.ctx_switches.saturating_sub(before.ctx_switches),
        ),
    }
}

/// Parse `NAME=PID`.
pub fn parse_watch(spec: &str) -> Result<(String, u32), String> {
    let (name, pid) = spec
        .split_once('=')
        .ok_or_else(|| format!("--watch-pid `{spec}` is not NAME=PID"))?;
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("--watch-pid `{spec}`: `{pid}` is not a process id"))?;
    if name.trim().is_empty() {
        return Err(format!("--watch-pid `{spec}` has an empty name"));
    }
    Ok((name.trim().to_owned(), pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 4 0 100 1000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(320));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_status_values() {
        let status = "Name:\tnginx\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(8192));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        let task =
            "Name:\tmcp-gateway\nvoluntary_ctxt_switches:\t1200\nnonvoluntary_ctxt_switches:\t34\n";
        assert_eq!(parse_status_ctx_switches(task), 1234);
        assert_eq!(parse_status_ctx_switches("Name:\tx\n"), 0);
    }

    #[test]
    fn reads_own_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0);
        assert!(s.hwm_kib >= s.rss_kib);
    }

    /// Context switches are read from another process whose threads all live on: a shell
    /// that keeps waiting for short `sleep`s (each wait puts it to sleep). The test
    /// process itself will not do: its other test threads end and take their counts along.
    #[test]
    fn counts_another_process_switching() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do sleep 0.01; done"])
            .spawn()
            .expect("start sh");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let first = sample(child.id()).expect("child's /proc entry");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let later = sample(child.id()).expect("child's /proc entry");
        let _ = child.kill();
        let _ = child.wait();
        assert!(first.ctx_switches > 0);
        assert!(
            later.ctx_switches > first.ctx_switches,
            "{} then {}",
            first.ctx_switches,
            later.ctx_switches
        );
    }

    #[test]
    fn usage_per_request() {
        let a = ProcSample {
            cpu_us: 1_000_000,
            rss_kib: 1,
            hwm_kib: 2,
            ctx_switches: 100,
        };
        let b = ProcSample {
            cpu_us: 1_500_000,
            rss_kib: 3,
            hwm_kib: 4,
            ctx_switches: 2_600,
        };
        let u = usage("gw", 7, a, b, 2.0, 1000);
        assert_eq!(u.cpu_us, 500_000);
        assert!((u.cpu_us_per_request - 500.0).abs() < 1e-9);
        assert!((u.cpu_percent - 25.0).abs() < 1e-9);
        assert_eq!(u.rss_kib, 3);
        assert!((u.ctx_switches_per_request - 2.5).abs() < 1e-9);
        assert_eq!(parse_watch("gateway=42"), Ok(("gateway".into(), 42)));
        assert!(parse_watch("gateway").is_err());
        assert!(parse_watch("=1").is_err());
        assert!(parse_watch("a=b").is_err());
    }
}
