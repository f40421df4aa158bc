//! Plain data shared by every stage: metric points, series keys, alert events, notifications.
//! No I/O.

mod alert;
mod notification;
mod point;
mod series;

pub use alert::{AlertEvent, AlertStatus, EndReason, Priority};
pub use notification::{
    AckInfo, DeliveryOutcome, Notification, NotificationKind, NotifiedAlert, StormSummary,
};
pub use point::{LabelPairs, MetricPoint, WirePoint};
pub use series::SeriesKey;
