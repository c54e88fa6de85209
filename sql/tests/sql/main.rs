//! SQL over the live views: the `.slt` files under `tests/slt` against a fixed shop, and
//! the engine's limits.

mod fixture;
mod history;
mod limits;
mod slt;
mod templates;

/// `docs/api.md` names every table a query can read, with each of its columns.
#[test]
fn every_table_and_column_is_documented() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md");
    for view in queries::View::all() {
        let name = format!("`{}`", view.name());
        let line = docs
            .lines()
            .find(|line| {
                line.starts_with("| ")
                    && line
                        .split('|')
                        .nth(1)
                        .is_some_and(|cell| cell.contains(&name))
            })
            .unwrap_or_else(|| panic!("docs/api.md has no row for table {name}"));
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        for field in view.schema().fields() {
            assert!(
                words.contains(&field.name().as_str()),
                "docs/api.md does not name column {} of {name}",
                field.name()
            );
        }
    }
}
