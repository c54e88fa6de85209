//! The `events` table: every event in the Parquet history, as committed when the query
//! is planned (the history lags the live views by at most `history.flush_ms`). The
//! history is listed when a query scans it, so that a query that does not read
//! `events` costs no listing of a directory or a bucket.

use std::sync::Arc;

use async_trait::async_trait;
use connectors::history::HistoryLocation;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
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
}

impl HistoryTable {
    pub fn new(location: Option<HistoryLocation>) -> HistoryTable {
        HistoryTable {
            location,
            schema: read_schema(),
        }
    }

    /// The committed files as one table, listed now.
    async fn committed(&self) -> Result<Arc<dyn TableProvider>> {
        let files = match &self.location {
            None => Vec::new(),
            Some(location) => connectors::history::committed_files(location)
                .await
                .map_err(|error| DataFusionError::External(Box::new(error)))?,
        };
        let urls = files
            .iter()
            .map(ListingTableUrl::parse)
            .collect::<Result<Vec<_>>>()?;
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
        self.committed()
            .await?
            .scan(state, projection, filters, limit)
            .await
    }
}
