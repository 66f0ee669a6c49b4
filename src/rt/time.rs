//! Timeouts: `double` seconds from C become an optional deadline.

use std::time::{Duration, Instant};

/// When a wait gives up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(When);

#[derive(Clone, Copy, Debug)]
enum When {
    /// Never: waits forever.
    Forever,
    /// Already passed: a timeout of 0 polls. Kept apart from `At` so that a poll (a
    /// continuation reading its done antecedent, say) never reads the clock.
    Now,
    At(Instant),
}

impl Deadline {
    /// A deadline that never comes.
    pub(crate) const FOREVER: Deadline = Deadline(When::Forever);

    /// Converts a C timeout: NaN is an error, negative waits forever, 0 polls, and a
    /// timeout too large to represent (or infinite) waits forever.
    pub(crate) fn from_timeout(timeout: f64) -> Option<Deadline> {
        if timeout.is_nan() {
            return None;
        }
        if timeout < 0.0 {
            return Some(Self::FOREVER);
        }
        if timeout == 0.0 {
            return Some(Deadline(When::Now));
        }
        let at = Duration::try_from_secs_f64(timeout)
            .ok()
            .and_then(|d| Instant::now().checked_add(d));
        Some(Deadline(at.map_or(When::Forever, When::At)))
    }

    /// Time left, `None` for forever; `Some(ZERO)` once passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match self.0 {
            When::Forever => None,
            When::Now => Some(Duration::ZERO),
            When::At(at) => Some(at.saturating_duration_since(Instant::now())),
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert!(Deadline::from_timeout(f64::NAN).is_none());
        assert!(Deadline::from_timeout(-1.0).unwrap().remaining().is_none());
        assert!(
            Deadline::from_timeout(f64::INFINITY)
                .unwrap()
                .remaining()
                .is_none()
        );
        assert!(Deadline::from_timeout(1e300).unwrap().remaining().is_none());
        assert!(Deadline::from_timeout(0.0).unwrap().expired());
        let d = Deadline::from_timeout(10.0).unwrap();
        assert!(!d.expired());
        assert!(d.remaining().unwrap() > Duration::from_secs(9));
    }
}
