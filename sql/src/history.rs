//! The `events` table: every event in the Parquet history, as committed when the query
//! starts (the history lags the live views by at most `history.flush_ms`).

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;

/// The history's committed files as one table; an empty table when there are none (or
/// no history at all), so that `events` always exists.
pub fn events_table(dir: Option<&std::path::Path>) -> Arc<dyn TableProvider> {
    let schema = connectors::history::schema();
    let files = match dir.map(connectors::history::committed_files) {
        Some(Ok(files)) => files,
        Some(Err(error)) => {
            tracing::warn!(%error, "the history cannot be listed; events reads as empty");
            Vec::new()
        }
        None => Vec::new(),
    };
    let urls: Vec<ListingTableUrl> = files
        .iter()
        .filter_map(|file| ListingTableUrl::parse(file.to_string_lossy()).ok())
        .collect();
    if urls.is_empty() {
        return Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("an empty table"));
    }
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema.clone());
    match ListingTable::try_new(config) {
        Ok(table) => Arc::new(table),
        Err(error) => {
            tracing::warn!(%error, "the history cannot be read; events reads as empty");
            Arc::new(MemTable::try_new(schema, vec![vec![]]).expect("an empty table"))
        }
    }
}
