//! The reporting context's part of the event catalogue (`report.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{DashboardDefinition, ReportFormat, ReportRequest, Str, Time};

records! {
    /// A report was asked for; the report executor runs it.
    pub struct ReportRequested {
        pub report_id: Str,
        #[serde(flatten)]
        pub request: ReportRequest,
    }

    /// A report ran and its file is ready to download.
    pub struct ReportCompleted {
        pub report_id: Str,
        pub rows: u64,
        pub bytes: u64,
        /// The frontier of the views it read.
        pub frontier: Time,
    }

    /// A report could not run (bad SQL, a parameter, a limit).
    pub struct ReportFailed {
        pub report_id: Str,
        pub error: Str,
    }

    /// A template is run on a cron schedule from now on.
    pub struct ReportScheduled {
        pub schedule_id: Str,
        pub template: Str,
        pub params: Str,
        pub cron: Str,
        pub format: ReportFormat,
    }

    /// A schedule was deleted: it asks for no more runs.
    pub struct ReportScheduleDeleted {
        pub schedule_id: Str,
    }

    /// A dashboard was saved beside the built-in ones.
    pub struct DashboardCreated {
        pub dashboard_id: Str,
        #[serde(flatten)]
        pub definition: DashboardDefinition,
    }

    /// A saved dashboard was given a new definition; its followers are sent it.
    pub struct DashboardUpdated {
        pub dashboard_id: Str,
        #[serde(flatten)]
        pub definition: DashboardDefinition,
    }

    /// A saved dashboard was deleted; its followers' streams end.
    pub struct DashboardDeleted {
        pub dashboard_id: Str,
    }
}
