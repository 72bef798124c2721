//! What the host's CPUs and the disk under a directory did between two samples, from
//! `/proc/stat` and `/proc/diskstats`, so a benchmark can say whether it was bound by CPU, by
//! the disk, or by neither (waiting on timers and round trips).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

/// One reading of the counters.
pub struct Sample {
    at: Instant,
    /// Jiffies over all CPUs.
    cpu: Option<Cpu>,
    disk: Option<Disk>,
}

/// Cumulative CPU time, in jiffies, by kind (the first line of `/proc/stat`).
#[derive(Clone, Copy)]
struct Cpu {
    user: u64,
    system: u64,
    iowait: u64,
    steal: u64,
    total: u64,
}

/// Cumulative counters of one block device (see the kernel's `Documentation/admin-guide/iostats.rst`).
struct Disk {
    name: String,
    writes: u64,
    sectors_written: u64,
    ms_writing: u64,
    /// Counted by kernels since 5.5.
    flushes: Option<u64>,
}

impl Sample {
    /// Reads the counters now, for the device holding `dir` (none if it is not on a block
    /// device, e.g. tmpfs).
    pub fn take(dir: &Path) -> Sample {
        Sample { at: Instant::now(), cpu: cpu(), disk: disk_of(dir) }
    }

    /// One line: CPU busy share and the disk's writes, bytes, flushes and mean write wait since
    /// `earlier`.
    pub fn since(&self, earlier: &Sample) -> String {
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-9);
        let cpu = match (earlier.cpu, self.cpu) {
            (Some(a), Some(b)) if b.total > a.total => {
                let share = |x: u64, y: u64| 100.0 * y.saturating_sub(x) as f64 / (b.total - a.total) as f64;
                let (user, system) = (share(a.user, b.user), share(a.system, b.system));
                format!(
                    "CPU {:.0}% busy ({user:.0}% user, {system:.0}% system), {:.0}% iowait, {:.0}% stolen by the hypervisor ({} cores)",
                    user + system,
                    share(a.iowait, b.iowait),
                    share(a.steal, b.steal),
                    selfcloud_core::cores()
                )
            }
            _ => "CPU not read".to_owned(),
        };
        let disk = match (&earlier.disk, &self.disk) {
            (Some(a), Some(b)) if a.name == b.name => {
                let writes = b.writes.saturating_sub(a.writes);
                let flushes = match (a.flushes, b.flushes) {
                    (Some(a), Some(b)) => format!(", {:.0} flushes/s", b.saturating_sub(a) as f64 / secs),
                    _ => String::new(),
                };
                format!(
                    "disk {}: {:.0} writes/s, {:.1} MB/s written{flushes}, {:.1} ms mean write wait",
                    b.name,
                    writes as f64 / secs,
                    b.sectors_written.saturating_sub(a.sectors_written) as f64 * 512.0 / 1e6 / secs,
                    b.ms_writing.saturating_sub(a.ms_writing) as f64 / writes.max(1) as f64
                )
            }
            _ => "disk not read (not a block device)".to_owned(),
        };
        format!("{cpu}; {disk}")
    }
}

/// The first line of `/proc/stat`: user nice system idle iowait irq softirq steal (guest time
/// is already inside user).
fn cpu() -> Option<Cpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(Cpu { user: field(0) + field(1), system: field(2) + field(5) + field(6), iowait: field(4), steal: field(7), total: fields.iter().take(8).sum() })
}

fn disk_of(dir: &Path) -> Option<Disk> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
    stats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 14 || fields[0].parse() != Ok(major) || fields[1].parse() != Ok(minor) {
            return None;
        }
        let n = |i: usize| fields[i].parse::<u64>().ok();
        Some(Disk { name: fields[2].to_owned(), writes: n(7)?, sectors_written: n(9)?, ms_writing: n(10)?, flushes: fields.get(18).and_then(|f| f.parse().ok()) })
    })
}

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn a_busy_spell_reads_as_busy_cpu() {
        let dir = std::env::temp_dir();
        let before = Sample::take(&dir);
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let line = Sample::take(&dir).since(&before);
        let busy: f64 = line.strip_prefix("CPU ").and_then(|rest| rest.split('%').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no CPU share in {line:?}"));
        // One core spun the whole spell: at least a share of the machine, however many cores.
        assert!(busy >= 100.0 / (2 * selfcloud_core::cores()) as f64 && busy <= 100.0, "{line}");
        assert!(line.contains("; disk "), "{line}");
    }
}
