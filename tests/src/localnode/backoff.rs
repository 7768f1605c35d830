//! Container restart back-off, like the kubelet's: the first restart is immediate, then
//! 10 s, doubling up to 5 minutes; a container that ran for 10 minutes resets it.

use std::time::Duration;

/// First non-zero back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// Maximum back-off.
pub const MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Tracks consecutive failures of one container.
#[derive(Debug, Clone, Default)]
pub struct RestartBackoff {
    consecutive: u32,
}

impl RestartBackoff {
    /// Records that the container exited after running for `ran_for` and returns how
    /// long to wait before starting it again.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESET_AFTER {
            self.consecutive = 0;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        delay_for(self.consecutive)
    }
}

/// Back-off before the restart that follows the `n`-th consecutive exit (1-based).
pub fn delay_for(n: u32) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let shift = (n - 2).min(16);
    INITIAL.saturating_mul(1 << shift).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_ten_seconds_to_five_minutes() {
        let got: Vec<u64> = (1..=9).map(|n| delay_for(n).as_secs()).collect();
        assert_eq!(got, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay_for(u32::MAX), MAX);
    }

    #[test]
    fn long_run_resets() {
        let mut b = RestartBackoff::default();
        assert_eq!(b.next_delay(Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(b.next_delay(Duration::from_secs(1)), INITIAL);
        assert_eq!(b.next_delay(Duration::from_secs(1)), INITIAL * 2);
        assert_eq!(b.next_delay(RESET_AFTER), Duration::ZERO);
    }
}
