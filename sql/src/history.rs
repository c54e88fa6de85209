//! The `events` table: every event in the Parquet history, as committed when the query
//! is planned (the history lags the live views by at most `history.flush_ms`). The
//! history is listed when a query scans it, so that a query that does not read
//! `events` costs no listing of a directory or a bucket.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use connectors::history::HistoryLocation;

use crate::erasure::{ErasePersonalData, Erased};
use crate::tables::Pinned;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::{FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Operator;
use datafusion::logical_expr::ScalarUDF;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, InListExpr, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::operator_statistics::{
    ExtendedStatistics, StatisticsProvider, StatisticsResult,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::ExecutionPlan;

/// The history's columns as queries read them: its text columns as string views, which
/// the Parquet reader fills without copying each value into one contiguous buffer
/// (reports over the history ran 10 to 20% faster so; BENCHMARKS.md).
fn read_schema() -> SchemaRef {
    let fields: Vec<_> = connectors::history::schema()
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 => Arc::new(field.as_ref().clone().with_data_type(DataType::Utf8View)),
            _ => field.clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The history at `location` (none: an empty table), so that `events` always exists.
#[derive(Debug)]
pub struct HistoryTable {
    location: Option<HistoryLocation>,
    schema: SchemaRef,
    counts: Arc<TypeCounts>,
}

impl HistoryTable {
    /// `counts` learns the type counts of the files each scan lists. The events of the
    /// users deleted in the session's pinned snapshot are read with their personal
    /// data erased (`crate::erasure`).
    pub fn new(location: Option<HistoryLocation>, counts: Arc<TypeCounts>) -> HistoryTable {
        HistoryTable {
            location,
            schema: read_schema(),
            counts,
        }
    }

    /// The committed files as one table, listed now.
    async fn committed(&self) -> Result<Arc<dyn TableProvider>> {
        let external = |error: connectors::Error| DataFusionError::External(Box::new(error));
        let urls = match &self.location {
            None => Vec::new(),
            Some(location) => {
                let names = connectors::history::committed_names(location)
                    .await
                    .map_err(external)?;
                self.counts.learn(location, &names);
                names
                    .iter()
                    .map(|name| ListingTableUrl::parse(location.file_url(name)))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        if urls.is_empty() {
            return Ok(Arc::new(MemTable::try_new(
                self.schema.clone(),
                vec![vec![]],
            )?));
        }
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema.clone());
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // The Parquet scan prunes row groups by the filters, and the plan filters again.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let scan = self
            .committed()
            .await?
            .scan(state, projection, filters, limit)
            .await?;
        let schema = scan.schema();
        let Some((data, _)) = schema.column_with_name("data") else {
            return Ok(scan);
        };
        let snapshot = Pinned::of(state.config())?;
        let erased = Erased::of(&snapshot);
        if erased.is_empty() {
            return Ok(scan);
        }
        // `data` through the erasure, every other column as it is. The plan's filters
        // run above this, on what the query is allowed to see.
        let erase = Arc::new(ScalarUDF::from(ErasePersonalData::new(Arc::new(erased))));
        let config = Arc::new(state.config_options().clone());
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), index));
                let expr: Arc<dyn PhysicalExpr> = match index == data {
                    false => column,
                    true => Arc::new(ScalarFunctionExpr::try_new(
                        erase.clone(),
                        vec![column],
                        &schema,
                        config.clone(),
                    )?),
                };
                Ok((expr, field.name().clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(columns, scan)?))
    }
}

/// How many events of each type each history file holds (from its footer), by the
/// file's name relative to the history's root. Files never change once written, so an
/// entry stays true; files no longer listed are forgotten.
#[derive(Debug, Default)]
pub struct TypeCounts {
    /// `None` for a file that does not record its counts.
    files: Mutex<HashMap<String, Option<Arc<Counts>>>>,
}

/// Events by type.
type Counts = BTreeMap<String, u64>;

impl TypeCounts {
    /// Reads the counts of the files of `names` not yet known, and forgets the rest. A
    /// footer that cannot be read only leaves its file without counts for now: they are
    /// estimates, and the scan itself reports what is wrong with the file.
    fn learn(&self, location: &HistoryLocation, names: &[String]) {
        let unknown: Vec<String> = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            names
                .iter()
                .filter(|name| !files.contains_key(*name))
                .cloned()
                .collect()
        };
        let mut read = Vec::with_capacity(unknown.len());
        for name in unknown {
            // Tried again at the next scan.
            if let Ok(counts) = connectors::history::file_type_counts(location, &name) {
                read.push((name, counts.map(Arc::new)));
            }
        }
        let listed: HashSet<&String> = names.iter().collect();
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.retain(|name, _| listed.contains(name));
        files.extend(read);
    }

    /// The events of the types `kinds` in the files `names`, if every file's counts are
    /// known.
    fn rows<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
        kinds: &BTreeSet<String>,
    ) -> Option<usize> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = 0u64;
        for name in names {
            let counts = files.get(name)?.as_ref()?;
            rows += kinds
                .iter()
                .filter_map(|kind| counts.get(kind))
                .sum::<u64>();
        }
        usize::try_from(rows).ok()
    }
}

/// Estimates what a filter on `type` keeps of a scan of the history from the files'
/// type counts, for the planner's choices: which side of a join to build the hash table
/// on, above all. Without it both sides of `events r JOIN events c` filtered on two
/// types look alike (a fixed selectivity of the same files) and the table is built on
/// whichever side is written first, however large.
#[derive(Debug)]
pub struct HistoryStatistics {
    counts: Arc<TypeCounts>,
}

impl HistoryStatistics {
    pub fn new(counts: Arc<TypeCounts>) -> HistoryStatistics {
        HistoryStatistics { counts }
    }
}

impl StatisticsProvider for HistoryStatistics {
    fn compute_statistics(
        &self,
        plan: &dyn ExecutionPlan,
        _child_stats: &[ExtendedStatistics],
    ) -> Result<StatisticsResult> {
        // A filter above a scan of the history, or the scan with the filter pushed in.
        let (filter, scan) = if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            (
                Some(filter.predicate().clone()),
                scan_below(filter.input().as_ref()),
            )
        } else {
            (None, plan.downcast_ref::<DataSourceExec>())
        };
        let Some((config, parquet)) =
            scan.and_then(|scan| scan.downcast_to_file_source::<ParquetSource>())
        else {
            return Ok(StatisticsResult::Delegate);
        };
        let Some(kinds) = filter
            .or_else(|| parquet.filter())
            .and_then(|predicate| types_kept(&predicate))
        else {
            return Ok(StatisticsResult::Delegate);
        };
        let names = config
            .file_groups
            .iter()
            .flat_map(|group| group.iter())
            .map(|file| history_name(file.object_meta.location.as_ref()));
        let Some(rows) = self.counts.rows(names, &kinds) else {
            return Ok(StatisticsResult::Delegate);
        };
        // The rows kept, exactly as far as the types go (other conditions keep fewer);
        // sizes unknown, so that a join compares its sides by rows.
        let mut statistics = Statistics::new_unknown(plan.schema().as_ref());
        statistics.num_rows = Precision::Inexact(rows);
        Ok(StatisticsResult::Computed(ExtendedStatistics::new(
            statistics,
        )))
    }
}

/// The scan of the history under `plan` through repartitions, which keep its rows and
/// columns as they are (not through projections: one could name another column `type`).
fn scan_below(plan: &dyn ExecutionPlan) -> Option<&DataSourceExec> {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        return Some(scan);
    }
    match plan.children()[..] {
        [child] if plan.is::<RepartitionExec>() || plan.is::<ProjectionExec>() => {
            scan_below(child.as_ref())
        }
        _ => None,
    }
}

/// A file's name relative to the history's root: its last two path segments
/// (`date=.../events-....parquet`).
fn history_name(path: &str) -> &str {
    let mut cuts = path.rmatch_indices('/').map(|(at, _)| at);
    match (cuts.next(), cuts.next()) {
        (Some(_), Some(at)) => &path[at + 1..],
        _ => path,
    }
}

/// The types of event `predicate` can keep, when it names them: `type = '...'`,
/// `type IN (...)`, and `AND`s and `OR`s of those with other conditions. `None` when it
/// keeps any type.
fn types_kept(predicate: &Arc<dyn PhysicalExpr>) -> Option<BTreeSet<String>> {
    let is_type = |expr: &Arc<dyn PhysicalExpr>| {
        expr.downcast_ref::<Column>()
            .is_some_and(|column| column.name() == "type")
    };
    let text = |expr: &Arc<dyn PhysicalExpr>| {
        expr.downcast_ref::<Literal>()
            .and_then(|literal| match literal.value() {
                ScalarValue::Utf8(Some(text))
                | ScalarValue::Utf8View(Some(text))
                | ScalarValue::LargeUtf8(Some(text)) => Some(text.clone()),
                _ => None,
            })
    };
    if let Some(binary) = predicate.downcast_ref::<BinaryExpr>() {
        let (left, right) = (binary.left(), binary.right());
        return match binary.op() {
            Operator::Eq if is_type(left) => text(right).map(|kind| BTreeSet::from([kind])),
            Operator::Eq if is_type(right) => text(left).map(|kind| BTreeSet::from([kind])),
            Operator::And => match (types_kept(left), types_kept(right)) {
                (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
                (Some(kinds), None) | (None, Some(kinds)) => Some(kinds),
                (None, None) => None,
            },
            Operator::Or => {
                let (a, b) = (types_kept(left)?, types_kept(right)?);
                Some(a.union(&b).cloned().collect())
            }
            _ => None,
        };
    }
    if let Some(list) = predicate.downcast_ref::<InListExpr>() {
        if !list.negated() && is_type(list.expr()) {
            return list.list().iter().map(text).collect();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> Arc<dyn PhysicalExpr> {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new("type", 1));
        let text = Arc::new(Literal::new(ScalarValue::Utf8View(Some(name.into()))));
        Arc::new(BinaryExpr::new(column, Operator::Eq, text))
    }

    fn other() -> Arc<dyn PhysicalExpr> {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new("position", 3));
        let number = Arc::new(Literal::new(ScalarValue::Int64(Some(7))));
        Arc::new(BinaryExpr::new(column, Operator::Gt, number))
    }

    fn both(
        op: Operator,
        a: Arc<dyn PhysicalExpr>,
        b: Arc<dyn PhysicalExpr>,
    ) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(a, op, b))
    }

    fn set(kinds: &[&str]) -> Option<BTreeSet<String>> {
        Some(kinds.iter().map(|kind| kind.to_string()).collect())
    }

    #[test]
    fn the_types_a_filter_keeps() {
        assert_eq!(types_kept(&kind("a")), set(&["a"]));
        assert_eq!(types_kept(&other()), None);
        assert_eq!(
            types_kept(&both(Operator::And, kind("a"), other())),
            set(&["a"])
        );
        assert_eq!(
            types_kept(&both(Operator::Or, kind("a"), kind("b"))),
            set(&["a", "b"])
        );
        assert_eq!(types_kept(&both(Operator::Or, kind("a"), other())), None);
        assert_eq!(
            types_kept(&both(Operator::And, kind("a"), kind("b"))),
            set(&[])
        );
    }

    #[test]
    fn files_are_named_from_the_historys_root() {
        assert_eq!(
            history_name("tmp/data/history/date=2026-11-01/events-1-2.parquet"),
            "date=2026-11-01/events-1-2.parquet"
        );
        assert_eq!(history_name("events-1-2.parquet"), "events-1-2.parquet");
    }
}
