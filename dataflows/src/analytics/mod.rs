//! Analytics: business metrics as differential views over the same events and rows as
//! every other view, in windows of log time (never the wall clock).
//!
//! `views.rs` declares each metric's table; `operators.rs` maintains them with one
//! `count_total` over several sums at once (`Sums`), `reduce`, and joins against named,
//! shared arrangements; `clock.rs` turns log time into the windows "the last 24 hours" and "the
//! last 7 days" as data, so that windows move as the log does and replay the same.
//! `anomaly.rs` flags minutes of a series outside a robust band as `analytics.anomaly`
//! events. `spec.rs` computes every metric again from the event list, as plain Rust: the
//! specification the dataflow is tested against.

pub mod anomaly;
mod clock;
pub mod events;
mod operators;
pub mod spec;
pub mod views;

pub use operators::{anomaly_row, metrics, reads_row};
pub use views::*;

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};

/// Several sums kept as one differential weight, so that one `count_total` maintains every
/// measure of a metric row: `(key, Sums([1, amount, 0, …]))` adds one and `amount`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Sums(pub [i64; Sums::WIDTH]);

impl Sums {
    pub const WIDTH: usize = 6;

    /// Sums with `values` first and zeros after.
    pub fn of(values: &[i64]) -> Sums {
        let mut sums = [0; Sums::WIDTH];
        sums[..values.len()].copy_from_slice(values);
        Sums(sums)
    }

    /// The first `n` sums.
    pub fn first(&self, n: usize) -> Vec<i64> {
        self.0[..n].to_vec()
    }
}

impl IsZero for Sums {
    fn is_zero(&self) -> bool {
        self.0.iter().all(|sum| *sum == 0)
    }
}

impl Semigroup for Sums {
    fn plus_equals(&mut self, rhs: &Self) {
        for (sum, add) in self.0.iter_mut().zip(rhs.0) {
            *sum += add;
        }
    }
}

impl Monoid for Sums {
    fn zero() -> Self {
        Sums::default()
    }
}

impl Abelian for Sums {
    fn negate(&mut self) {
        for sum in &mut self.0 {
            *sum = -*sum;
        }
    }
}

impl Multiply<isize> for Sums {
    type Output = Sums;

    fn multiply(mut self, rhs: &isize) -> Sums {
        for sum in &mut self.0 {
            *sum *= *rhs as i64;
        }
        self
    }
}
