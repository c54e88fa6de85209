//! Report and schedule read models.

use serde::{Deserialize, Serialize};

use crate::events::{
    DashboardCreated, DashboardDeleted, DashboardUpdated, ReportCompleted, ReportFailed,
    ReportRequested, ReportScheduleDeleted, ReportScheduled,
};
use crate::model::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Waiting for (or in) the report executor.
    Queued,
    Completed,
    Failed,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Queued => "queued",
            ReportStatus::Completed => "completed",
            ReportStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReportRow {
    pub report_id: Str,
    pub request: ReportRequest,
    pub status: ReportStatus,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub frontier: Option<Time>,
    pub error: Option<Str>,
    pub requested_at: Ts,
    pub finished_at: Option<Ts>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReportScheduleRow {
    pub schedule_id: Str,
    pub template: Str,
    pub params: Str,
    pub cron: Str,
    pub format: ReportFormat,
    pub created_at: Ts,
}

pub(crate) fn step_report(row: &mut Option<ReportRow>, event: &Event) {
    match &event.body {
        EventBody::ReportRequested(ReportRequested { report_id, request }) => {
            *row = Some(ReportRow {
                report_id: report_id.clone(),
                request: request.clone(),
                status: ReportStatus::Queued,
                rows: None,
                bytes: None,
                frontier: None,
                error: None,
                requested_at: event.ts,
                finished_at: None,
            })
        }
        EventBody::ReportCompleted(ReportCompleted {
            rows,
            bytes,
            frontier,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                row.status = ReportStatus::Completed;
                row.rows = Some(*rows);
                row.bytes = Some(*bytes);
                row.frontier = Some(*frontier);
                row.finished_at = Some(event.ts);
            }
        }
        EventBody::ReportFailed(ReportFailed { error, .. }) => {
            if let Some(row) = row.as_mut() {
                row.status = ReportStatus::Failed;
                row.error = Some(error.clone());
                row.finished_at = Some(event.ts);
            }
        }
        _ => {}
    }
}

pub(crate) fn step_report_schedule(row: &mut Option<ReportScheduleRow>, event: &Event) {
    match &event.body {
        EventBody::ReportScheduled(ReportScheduled {
            schedule_id,
            template,
            params,
            cron,
            format,
        }) => {
            *row = Some(ReportScheduleRow {
                schedule_id: schedule_id.clone(),
                template: template.clone(),
                params: params.clone(),
                cron: cron.clone(),
                format: *format,
                created_at: event.ts,
            })
        }
        EventBody::ReportScheduleDeleted(ReportScheduleDeleted { .. }) => *row = None,
        _ => {}
    }
}

/// A dashboard saved through the API.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DashboardRow {
    pub dashboard_id: Str,
    pub definition: DashboardDefinition,
    /// 1 when created, one more at each update.
    pub version: u64,
    pub created_at: Ts,
    pub updated_at: Ts,
}

pub(crate) fn step_dashboard(row: &mut Option<DashboardRow>, event: &Event) {
    match &event.body {
        EventBody::DashboardCreated(DashboardCreated {
            dashboard_id,
            definition,
        }) => {
            *row = Some(DashboardRow {
                dashboard_id: dashboard_id.clone(),
                definition: definition.clone(),
                version: 1,
                created_at: event.ts,
                updated_at: event.ts,
            })
        }
        EventBody::DashboardUpdated(DashboardUpdated { definition, .. }) => {
            if let Some(row) = row.as_mut() {
                row.definition = definition.clone();
                row.version += 1;
                row.updated_at = event.ts;
            }
        }
        EventBody::DashboardDeleted(DashboardDeleted { .. }) => *row = None,
        _ => {}
    }
}
