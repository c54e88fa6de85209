//! psql's catalog queries, rewritten where they ask for something no tidemark table has.
//!
//! `\d+ NAME` asks for a relation's storage options as
//! `array_to_string(c.reloptions || array(select 'toast.' || x from unnest(tc.reloptions) x), ', ')`:
//! `datafusion-postgres`'s `pg_class` has no `reloptions`, and DataFusion has no
//! `ARRAY(subquery)`. tidemark's tables are views and Parquet files, never relations with
//! storage options, so the answer is the one PostgreSQL gives for a table without any,
//! and the one psql asks for itself without `+`: the empty string. Every other statement
//! goes to the session untouched.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `sql` rewritten, or `None` when nothing in it needs to be (the usual case: the text
/// then goes to the session as the client sent it).
pub(crate) fn rewrite(sql: &str) -> Option<String> {
    // Cheap test first: only statements naming `reloptions` are looked at again.
    if !sql.to_ascii_lowercase().contains("reloptions") {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut options = NoStorageOptions { changed: false };
    for statement in &mut statements {
        let _ = statement.visit(&mut options);
    }
    options.changed.then(|| {
        statements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(";\n")
    })
}

/// Replaces `array_to_string(...)` over a relation's `reloptions` by `''`.
struct NoStorageOptions {
    changed: bool,
}

impl VisitorMut for NoStorageOptions {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        let named = function
            .name
            .0
            .last()
            .and_then(|part| part.as_ident())
            .is_some_and(|name| name.value.eq_ignore_ascii_case("array_to_string"));
        let FunctionArguments::List(list) = &function.args else {
            return ControlFlow::Continue(());
        };
        let over_options = list.args.first().is_some_and(|first| match first {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(array)) => names_options(array),
            _ => false,
        });
        if named && over_options {
            *expr = Expr::value(Value::SingleQuotedString(String::new()));
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

/// Whether `expr` reads a column called `reloptions`.
fn names_options(expr: &Expr) -> bool {
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let is_options = |ident: &Ident| ident.value.eq_ignore_ascii_case("reloptions");
            match expr {
                Expr::Identifier(ident) if is_options(ident) => self.0 = true,
                Expr::CompoundIdentifier(parts) if parts.last().is_some_and(is_options) => {
                    self.0 = true
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder(false);
    let _ = expr.visit(&mut finder);
    finder.0
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn storage_options_are_none() {
        let psql = "SELECT c.relchecks, c.relkind, pg_catalog.array_to_string(c.reloptions || \
                    array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')\n\
                    , c.reltablespace FROM pg_catalog.pg_class c \
                    LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid) \
                    WHERE c.oid = '16461';";
        let rewritten = rewrite(psql).expect("rewritten");
        assert!(!rewritten.contains("reloptions"), "{rewritten}");
        assert!(
            rewritten.contains("c.relchecks, c.relkind, '', c.reltablespace"),
            "{rewritten}"
        );
    }

    #[test]
    fn other_statements_pass_untouched() {
        assert_eq!(rewrite("SELECT * FROM orders"), None);
        assert_eq!(rewrite("SELECT reloptions FROM t"), None);
        assert_eq!(rewrite("SELEC reloptions"), None);
    }
}
