//! The live views as DataFusion tables, every one read from the same snapshot: a query
//! sees one frontier from its first batch to its last, and holding the snapshot blocks
//! neither publication nor any command.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use queries::{Snapshot, View, ViewScan};

/// One view of one snapshot, as a table.
pub struct LiveTable {
    snapshot: Arc<Snapshot>,
    view: View,
}

impl LiveTable {
    pub fn new(snapshot: Arc<Snapshot>, view: View) -> LiveTable {
        LiveTable { snapshot, view }
    }
}

impl fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.view.name(), self.snapshot.frontier)
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
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
            snapshot: self.snapshot.clone(),
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
