//! The live views as DataFusion tables, every one read from the same snapshot: a query
//! sees one frontier from its first batch to its last, and holding the snapshot blocks
//! neither publication nor any command.
//!
//! The tables do not hold a snapshot: a scan reads the one pinned in its session's
//! configuration ([`Pinned`]). An HTTP query's session is made with its snapshot pinned;
//! a PostgreSQL connection keeps one session and pins a new snapshot per statement.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::SessionConfig;
use queries::{Snapshot, View, ViewScan};

/// The snapshot every live table of a session is read at.
#[derive(Debug)]
pub struct Pinned(pub Arc<Snapshot>);

impl Pinned {
    /// The snapshot pinned in `config`.
    pub fn of(config: &SessionConfig) -> Result<Arc<Snapshot>> {
        config
            .get_extension::<Pinned>()
            .map(|pinned| pinned.0.clone())
            .ok_or_else(|| DataFusionError::Internal("no snapshot is pinned".into()))
    }
}

/// One view, as a table.
#[derive(Debug)]
pub struct LiveTable {
    view: View,
}

impl LiveTable {
    pub fn new(view: View) -> LiveTable {
        LiveTable { view }
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    /// A base table, as the views are to SQL clients (psql's `\dt` lists base tables).
    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The scan builds only the projected columns; the plan needs no projection of
        // its own.
        let columns: Arc<[usize]> = match projection {
            Some(columns) => columns.as_slice().into(),
            None => (0..self.view.schema().fields().len()).collect(),
        };
        let partition = ViewPartition {
            snapshot: Pinned::of(state.config())?,
            view: self.view,
            schema: Arc::new(self.view.schema().project(&columns)?),
            columns,
            batch_rows: state.config().batch_size(),
        };
        let schema = partition.schema.clone();
        let exec =
            StreamingTableExec::try_new(schema, vec![Arc::new(partition)], None, [], false, limit)?;
        Ok(Arc::new(exec))
    }
}

/// The one partition of a view's scan.
struct ViewPartition {
    snapshot: Arc<Snapshot>,
    view: View,
    columns: Arc<[usize]>,
    schema: SchemaRef,
    batch_rows: usize,
}

impl fmt::Debug for ViewPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} columns {:?}",
            self.view.name(),
            self.snapshot.frontier,
            self.columns
        )
    }
}

impl PartitionStream for ViewPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let scan = ViewScan::new(self.snapshot.clone(), self.view, self.batch_rows)
            .with_projection(self.columns.clone());
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(scan.map(Ok)),
        ))
    }
}
