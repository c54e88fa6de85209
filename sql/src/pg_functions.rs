//! Catalog functions psql's `\d+` calls that `datafusion-postgres` does not provide.
//!
//! tidemark's tables are live views in memory and Parquet files of the history, not
//! relations with a size on disk: `pg_table_size` is NULL for every table (PostgreSQL's
//! answer for an object it has no storage for), so psql shows no size rather than a
//! made-up one. `pg_size_pretty` is PostgreSQL's own formatting, for any query that
//! calls it; `obj_description` and `col_description` are NULL, as for an object without a
//! comment.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

/// Registers the functions on `context`.
pub fn register(context: &SessionContext) {
    let oid = || TypeSignature::Uniform(1, vec![DataType::Int32, DataType::Int64]);
    let functions = [
        CatalogFunction {
            name: "pg_table_size",
            signature: Signature::one_of(vec![oid()], Volatility::Stable),
            returns: DataType::Int64,
            body: no_size,
        },
        CatalogFunction {
            name: "obj_description",
            signature: Signature::one_of(
                vec![
                    oid(),
                    TypeSignature::Exact(vec![DataType::Int32, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Int64, DataType::Utf8]),
                ],
                Volatility::Stable,
            ),
            returns: DataType::Utf8,
            body: no_description,
        },
        CatalogFunction {
            name: "col_description",
            signature: Signature::one_of(
                [DataType::Int32, DataType::Int64]
                    .into_iter()
                    .flat_map(|table| {
                        [DataType::Int16, DataType::Int32, DataType::Int64]
                            .map(|column| TypeSignature::Exact(vec![table.clone(), column]))
                    })
                    .collect(),
                Volatility::Stable,
            ),
            returns: DataType::Utf8,
            body: no_description,
        },
        CatalogFunction {
            name: "pg_size_pretty",
            signature: Signature::uniform(1, vec![DataType::Int64], Volatility::Immutable),
            returns: DataType::Utf8,
            body: pretty_sizes,
        },
    ];
    for function in functions {
        context.register_udf(ScalarUDF::from(function));
    }
}

/// A catalog function: its name, what it takes and gives, and its body. Two are the same
/// function when their names and signatures are.
#[derive(Debug)]
struct CatalogFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    body: fn(ScalarFunctionArgs) -> Result<ColumnarValue>,
}

impl PartialEq for CatalogFunction {
    fn eq(&self, other: &Self) -> bool {
        (self.name, &self.signature) == (other.name, &other.signature)
    }
}

impl Eq for CatalogFunction {}

impl std::hash::Hash for CatalogFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.name, &self.signature).hash(state);
    }
}

impl ScalarUDFImpl for CatalogFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.body)(args)
    }
}

/// `pg_table_size(oid)`: NULL, for tables without storage of their own.
fn no_size(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    let nulls = Int64Array::new_null(args.number_rows);
    Ok(ColumnarValue::Array(Arc::new(nulls) as ArrayRef))
}

/// `obj_description(oid [, catalog])` and `col_description(table, column)`: NULL, no
/// object has a comment.
fn no_description(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    let nulls = StringArray::new_null(args.number_rows);
    Ok(ColumnarValue::Array(Arc::new(nulls) as ArrayRef))
}

/// `pg_size_pretty(bigint)`, as PostgreSQL formats it.
fn pretty_sizes(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(&args.args)?;
    let sizes = arrays[0].as_primitive::<Int64Type>();
    let pretty: StringArray = sizes.iter().map(|size| size.map(size_pretty)).collect();
    Ok(ColumnarValue::Array(Arc::new(pretty) as ArrayRef))
}

/// PostgreSQL's `pg_size_pretty` (`dbsize.c`): bytes below 10 kB, then each unit while
/// under 10,240 of it (counted in half units), rounding half away from zero.
fn size_pretty(size: i64) -> String {
    // (name, limit, rounded, bits of the unit)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    let mut size = size;
    for (index, (name, limit, round, bits)) in UNITS.iter().enumerate() {
        let Some((_, _, next_round, next_bits)) = UNITS.get(index + 1) else {
            let size = if *round { half_rounded(size) } else { size };
            return format!("{size} {name}");
        };
        if size.unsigned_abs() < *limit as u64 {
            let size = if *round { half_rounded(size) } else { size };
            return format!("{size} {name}");
        }
        let shift = next_bits - bits - u32::from(*next_round) + u32::from(*round);
        size /= 1_i64 << shift;
    }
    unreachable!("the last unit always answers")
}

#[cfg(test)]
mod tests {
    use super::size_pretty;

    /// PostgreSQL 16's answers.
    #[test]
    fn sizes_read_as_postgres_prints_them() {
        for (size, pretty) in [
            (0, "0 bytes"),
            (10_239, "10239 bytes"),
            (10_240, "10 kB"),
            (10_485_247, "10239 kB"),
            (10_485_759, "10 MB"),
            (1_000_000_000, "954 MB"),
            (1 << 40, "1024 GB"),
            (-10_240, "-10 kB"),
            (i64::MAX, "8192 PB"),
        ] {
            assert_eq!(size_pretty(size), pretty, "{size}");
        }
    }
}
