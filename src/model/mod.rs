//! Plain data shared by every stage: metric points, series keys, alert events. No I/O.

mod alert;
mod point;
mod series;

pub use alert::{AlertEvent, AlertStatus, EndReason, Priority};
pub use point::{MetricPoint, WirePoint};
pub use series::SeriesKey;
