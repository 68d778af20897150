//! Who runs a trace, and whether that process is still there.
//!
//! An owner is a process id, the process's start time and the host. On Linux the start time
//! comes from `/proc/PID/stat` (ticks since boot) and the boot time, so a pid reused by a newer
//! process — after a crash, or after a reboot — is told apart from the owner. Elsewhere the start
//! time is unknown and only the pid is probed.

use std::sync::OnceLock;

use aigentflow_core_states::time;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// Start times read at different moments may differ by this much (the kernel's boot time is
/// itself derived from the clock and drifts by up to a second).
const START_TOLERANCE: TimeDelta = TimeDelta::seconds(2);

/// The process that runs a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    /// When the process started, if this platform tells.
    #[serde(serialize_with = "crate::model::opt_time")]
    pub started_at: Option<DateTime<Utc>>,
    pub host: String,
}

impl Owner {
    /// This process.
    pub fn current() -> &'static Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner { pid, started_at: start_time(pid), host: host_name() }
        })
    }

    /// Whether this owner's process is still running on this host; `None` when that cannot be
    /// told from here (another host, or the probe failed), so the caller must judge otherwise.
    pub fn is_alive(&self) -> Option<bool> {
        if self.host != Owner::current().host {
            return None;
        }
        judge(self, probe(self.pid))
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// What probing a pid found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// No process has this pid.
    Gone,
    /// A process has this pid (perhaps not ours to signal).
    Running { started_at: Option<DateTime<Utc>>, zombie: bool },
    /// The probe itself failed.
    Unknown,
}

/// Probes a pid on this host.
pub fn probe(pid: u32) -> Probe {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return Probe::Unknown;
    };
    match rustix::process::test_kill_process(p) {
        // EPERM: the process exists but belongs to someone else. It is alive.
        Ok(()) | Err(rustix::io::Errno::PERM) => {
            let stat = read_stat(pid);
            Probe::Running {
                started_at: stat.as_ref().and_then(|s| s.started_at),
                zombie: stat.is_some_and(|s| s.zombie),
            }
        }
        Err(rustix::io::Errno::SRCH) => Probe::Gone,
        Err(_) => Probe::Unknown,
    }
}

/// Whether the recorded owner is alive given what the probe found; `None` when it cannot tell.
/// A process that exists is alive unless it is a zombie or provably started after the owner.
pub fn judge(owner: &Owner, probe: Probe) -> Option<bool> {
    match probe {
        Probe::Gone => Some(false),
        Probe::Unknown => None,
        Probe::Running { zombie: true, .. } => Some(false),
        Probe::Running { started_at, .. } => match (owner.started_at, started_at) {
            (Some(recorded), Some(now)) => Some((now - recorded).abs() <= START_TOLERANCE),
            _ => Some(true),
        },
    }
}

struct Stat {
    started_at: Option<DateTime<Utc>>,
    zombie: bool,
}

/// State and start time from `/proc/PID/stat` (Linux), if readable.
fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    // Field 22, starttime, in clock ticks since boot; `rest` starts at field 3.
    let ticks: u64 = fields.get(19)?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let started_at = boot_time().map(|boot| {
        let millis = i64::try_from(ticks.saturating_mul(1000) / hz).unwrap_or(i64::MAX);
        time::millis(boot + TimeDelta::milliseconds(millis))
    });
    Some(Stat { started_at, zombie })
}

fn start_time(pid: u32) -> Option<DateTime<Utc>> {
    read_stat(pid).and_then(|s| s.started_at)
}

/// When this machine booted (`btime` of `/proc/stat`), read once per process.
fn boot_time() -> Option<DateTime<Utc>> {
    static BOOT: OnceLock<Option<DateTime<Utc>>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let secs: i64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        DateTime::from_timestamp(secs, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(started_at: Option<DateTime<Utc>>) -> Owner {
        Owner { pid: 4242, started_at, host: "h".into() }
    }

    #[test]
    fn this_process_is_alive_and_has_a_start_time_on_linux() {
        let me = Owner::current();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.host.is_empty());
        if cfg!(target_os = "linux") {
            let started = me.started_at.expect("start time from /proc");
            assert!(started <= Utc::now() && started > Utc::now() - TimeDelta::days(1));
        }
        assert_eq!(me.is_alive(), Some(true));
    }

    #[test]
    fn a_process_that_exists_is_alive_unless_provably_another_or_a_zombie() {
        let t = Utc::now();
        let running = |started_at, zombie| Probe::Running { started_at, zombie };
        assert_eq!(judge(&owner(Some(t)), Probe::Gone), Some(false));
        assert_eq!(
            judge(&owner(Some(t)), running(Some(t + TimeDelta::seconds(1)), false)),
            Some(true)
        );
        assert_eq!(
            judge(&owner(Some(t)), running(Some(t + TimeDelta::hours(1)), false)),
            Some(false)
        );
        assert_eq!(judge(&owner(Some(t)), running(Some(t), true)), Some(false));
        // Not ours to signal (EPERM) and no start time to compare: alive.
        assert_eq!(judge(&owner(Some(t)), running(None, false)), Some(true));
        assert_eq!(judge(&owner(None), running(Some(t), false)), Some(true));
        assert_eq!(judge(&owner(Some(t)), Probe::Unknown), None);
    }

    #[test]
    fn pid_1_exists_and_an_unused_pid_is_gone() {
        assert!(matches!(probe(1), Probe::Running { zombie: false, .. }));
        assert_eq!(probe(i32::MAX as u32), Probe::Gone);
        assert_eq!(probe(0), Probe::Unknown);
    }
}
