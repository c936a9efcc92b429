//! Batch approval by stake: approved when approving stake ÷ online stake ≥ 2/3, decided
//! exactly as `3 × approving ≥ 2 × online` in `u128` (no floats, no rounding).

use serde::{Deserialize, Serialize};

/// True when `approving` stake is at least two thirds of `online` stake. No online stake
/// approves nothing.
///
/// ```
/// assert!(dpos::is_approved(2, 3));      // exactly 2/3
/// assert!(!dpos::is_approved(665, 1000)); // 0.665 < 2/3
/// assert!(dpos::is_approved(667, 1000));
/// assert!(!dpos::is_approved(0, 0));
/// ```
pub fn is_approved(approving: u64, online: u64) -> bool {
    online > 0 && 3 * u128::from(approving) >= 2 * u128::from(online)
}

/// The tally behind an approval decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Stake of the online, active representatives that approved.
    pub approving_stake: u64,
    /// Stake of the online, active representatives.
    pub online_stake: u64,
    /// [`is_approved`]`(approving_stake, online_stake)`.
    pub approved: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_thirds_table() {
        let check = |a: u64, o: u64, want: bool| assert_eq!(is_approved(a, o), want, "{a}/{o}");
        check(2, 3, true);
        check(1, 3, false);
        check(3, 3, true);
        check(66, 100, false); // the seeds' 0.66 is *not* enough: exactly 2/3 is used
        check(67, 100, true);
        check(666_666, 1_000_000, false);
        check(666_667, 1_000_000, true);
        check(200, 300, true);
        check(199, 300, false);
        check(0, 0, false);
        check(5, 0, false);
        check(u64::MAX, u64::MAX, true);
        // u64::MAX is divisible by 3: exactly 2/3 at the top, no overflow.
        check(u64::MAX / 3 * 2 - 1, u64::MAX, false);
        check(u64::MAX / 3 * 2, u64::MAX, true);
    }
}
