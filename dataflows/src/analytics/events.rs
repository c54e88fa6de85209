//! The analytics context's part of the event catalogue (`analytics.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{Str, Ts};

records! {
    /// A per-minute series left its usual band: the minute's value against the median
    /// of the minutes before it and the band around that median (see
    /// `analytics::anomaly`).
    pub struct AnomalyDetected {
        /// `orders`, `payments_failed`, `fraud_flags` or `rejections`.
        pub series: Str,
        /// Log time at the start of the minute (milliseconds since the Unix epoch).
        pub minute: Ts,
        pub value: i64,
        pub median: i64,
        pub lower: i64,
        pub upper: i64,
        /// How many minutes before it the band was taken over.
        pub window_minutes: i64,
    }
}
