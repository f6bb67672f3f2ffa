//! What the kernel tells about processes: CPU time and memory from /proc, the open-file limit.

use std::fs;

/// Raise RLIMIT_NOFILE to its hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User + system CPU seconds of process `pid` (all its threads), or None if it is gone.
pub fn proc_cpu(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// (VmRSS, VmHWM) of process `pid` in KiB.
pub fn proc_mem(pid: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// This process's user + system CPU seconds (all threads).
pub fn self_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

/// A server's CPU and memory, sampled at the start and end of the measured interval.
#[derive(Default, Clone, Copy)]
pub struct ServerSample {
    pub cpu: Option<f64>,
    pub rss_kb: Option<u64>,
    pub hwm_kb: Option<u64>,
}

pub fn sample(pid: Option<u32>) -> ServerSample {
    let Some(pid) = pid else {
        return ServerSample::default();
    };
    let mem = proc_mem(pid);
    ServerSample {
        cpu: proc_cpu(pid),
        rss_kb: mem.map(|m| m.0),
        hwm_kb: mem.map(|m| m.1),
    }
}

/// Several processes as one server (a cluster's nodes and its Redis): CPU and memory summed,
/// None if any is gone; and each one's CPU, in the order given.
pub fn sample_all(pids: &[u32]) -> (ServerSample, Vec<Option<f64>>) {
    let each: Vec<ServerSample> = pids.iter().map(|&p| sample(Some(p))).collect();
    let sum_u = |f: fn(&ServerSample) -> Option<u64>| each.iter().map(f).sum::<Option<u64>>();
    let total = ServerSample {
        cpu: if pids.is_empty() {
            None
        } else {
            each.iter().map(|s| s.cpu).sum()
        },
        rss_kb: if pids.is_empty() {
            None
        } else {
            sum_u(|s| s.rss_kb)
        },
        hwm_kb: if pids.is_empty() {
            None
        } else {
            sum_u(|s| s.hwm_kb)
        },
    };
    (total, each.iter().map(|s| s.cpu).collect())
}
