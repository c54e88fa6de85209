//! The reporting context (the brief's reporting-service): report runs and their
//! schedules, decided here and run outside the dataflow by the report executor, as
//! payments are.
//!
//! `Reports`: one aggregate keyed by report, schedule or dashboard id.
//! In: report requests and results, schedule creates and deletes, dashboard creates,
//! updates and deletes. Out: `report.*` and `dashboard.*` events and rejections.
//! Invariants: a report id is asked for once (a schedule's slot names its report, so a
//! slot runs once however often it is asked for); a report gets one result; a
//! dashboard id names one dashboard at a time, and only a saved one changes.

pub mod events;
pub mod views;

use std::collections::{HashMap, HashSet};

use timely::dataflow::Stream;

use crate::events::{
    DashboardCreated, DashboardDeleted, DashboardUpdated, ReportCompleted, ReportFailed,
    ReportRequested, ReportScheduleDeleted, ReportScheduled,
};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

pub type ReportIn = Input<Command>;

/// The input of the report aggregate for a command, if it is a report's.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<ReportIn> {
    matches!(
        command,
        Command::RequestReport { .. }
            | Command::ReportResult { .. }
            | Command::ScheduleReport { .. }
            | Command::DeleteReportSchedule { .. }
            | Command::CreateDashboard { .. }
            | Command::UpdateDashboard { .. }
            | Command::DeleteDashboard { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

/// The report a schedule's slot (Unix milliseconds) runs as.
pub fn report_id_for_slot(schedule_id: &str, slot: Ts) -> Str {
    format!(
        "rpt_{}_{slot}",
        schedule_id.strip_prefix("sch_").unwrap_or(schedule_id)
    )
    .into()
}

pub trait Reports<'scope> {
    fn reports(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

impl<'scope> Reports<'scope> for Stream<'scope, Time, Vec<ReportIn>> {
    fn reports(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        // Each report asked for, and whether it has its result.
        let mut reports: HashMap<Str, bool> = HashMap::new();
        let mut schedules: HashSet<Str> = HashSet::new();
        let mut dashboards: HashSet<Str> = HashSet::new();
        self.keyed_ordered(
            "Reports",
            |input: &ReportIn| key_hash(input.op.aggregate_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    let mut decided = Decided::of(&input);
                    let conflict = |code: &str| RejectionKind::Conflict { code: code.into() };
                    match input.op {
                        Command::RequestReport { report_id, request } => {
                            if reports.contains_key(&report_id) {
                                out.push(decided.reject(
                                    conflict("report_exists"),
                                    format!("report {report_id} was already asked for"),
                                ));
                                continue;
                            }
                            reports.insert(report_id.clone(), false);
                            out.push(decided.event(ReportRequested { report_id, request }));
                        }
                        Command::ReportResult { report_id, outcome } => {
                            match reports.get_mut(&report_id) {
                                None => out.push(decided.reject(
                                    RejectionKind::NotFound,
                                    format!("report {report_id} was never asked for"),
                                )),
                                Some(true) => out.push(decided.reject(
                                    conflict("report_finished"),
                                    format!("report {report_id} already has its result"),
                                )),
                                Some(finished) => {
                                    *finished = true;
                                    out.push(
                                        decided.event::<EventBody>(match outcome {
                                            ReportOutcome::Completed {
                                                rows,
                                                bytes,
                                                frontier,
                                            } => ReportCompleted {
                                                report_id,
                                                rows,
                                                bytes,
                                                frontier,
                                            }
                                            .into(),
                                            ReportOutcome::Failed { error } => {
                                                ReportFailed { report_id, error }.into()
                                            }
                                        }),
                                    );
                                }
                            }
                        }
                        Command::ScheduleReport {
                            schedule_id,
                            template,
                            params,
                            cron,
                            format,
                        } => {
                            if !schedules.insert(schedule_id.clone()) {
                                out.push(decided.reject(
                                    conflict("schedule_exists"),
                                    format!("schedule {schedule_id} already exists"),
                                ));
                                continue;
                            }
                            out.push(decided.event(ReportScheduled {
                                schedule_id,
                                template,
                                params,
                                cron,
                                format,
                            }));
                        }
                        Command::DeleteReportSchedule { schedule_id } => {
                            if !schedules.remove(&schedule_id) {
                                out.push(decided.reject(
                                    RejectionKind::NotFound,
                                    format!("schedule {schedule_id} does not exist"),
                                ));
                                continue;
                            }
                            out.push(decided.event(ReportScheduleDeleted { schedule_id }));
                        }
                        Command::CreateDashboard {
                            dashboard_id,
                            definition,
                        } => {
                            if !dashboards.insert(dashboard_id.clone()) {
                                out.push(decided.reject(
                                    conflict("dashboard_exists"),
                                    format!("dashboard {dashboard_id} already exists"),
                                ));
                                continue;
                            }
                            out.push(decided.event(DashboardCreated {
                                dashboard_id,
                                definition,
                            }));
                        }
                        Command::UpdateDashboard {
                            dashboard_id,
                            definition,
                        } => {
                            if !dashboards.contains(&dashboard_id) {
                                out.push(decided.reject(
                                    RejectionKind::NotFound,
                                    format!("dashboard {dashboard_id} does not exist"),
                                ));
                                continue;
                            }
                            out.push(decided.event(DashboardUpdated {
                                dashboard_id,
                                definition,
                            }));
                        }
                        Command::DeleteDashboard { dashboard_id } => {
                            if !dashboards.remove(&dashboard_id) {
                                out.push(decided.reject(
                                    RejectionKind::NotFound,
                                    format!("dashboard {dashboard_id} does not exist"),
                                ));
                                continue;
                            }
                            out.push(decided.event(DashboardDeleted { dashboard_id }));
                        }
                        _ => {}
                    }
                }
            },
        )
    }
}
