//! Report templates: SQL files in `sql/reports/`, built into the binary.
//!
//! A template is a query whose header says what it is and what it takes:
//!
//! ```sql
//! -- title: Daily sales
//! -- description: Orders paid, revenue ... per day and currency.
//! -- param since date = 1970-01-01: first day
//! -- param limit int = 10: customers per currency
//! SELECT ... WHERE day >= CAST($since AS DATE) ...
//! ```
//!
//! A parameter is `-- param NAME TYPE [= DEFAULT]: description`, with TYPE `text`,
//! `int` or `date` (`YYYY-MM-DD`); one without a default must be given. The query reads
//! its parameters as `$NAME`.

use std::sync::LazyLock;

use serde::Serialize;
use serde_json::{Map, Value};

/// Every template, by id (the file's name without `.sql`), in id order.
const SOURCES: &[(&str, &str)] = &[
    ("daily_sales", include_str!("../reports/daily_sales.sql")),
    (
        "inventory_turnover",
        include_str!("../reports/inventory_turnover.sql"),
    ),
    ("kpis", include_str!("../reports/kpis.sql")),
    ("low_stock", include_str!("../reports/low_stock.sql")),
    (
        "payment_success_by_method",
        include_str!("../reports/payment_success_by_method.sql"),
    ),
    ("refunds", include_str!("../reports/refunds.sql")),
    (
        "top_customers",
        include_str!("../reports/top_customers.sql"),
    ),
];

static TEMPLATES: LazyLock<Vec<Template>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(id, source)| {
            Template::parse(id, source)
                .unwrap_or_else(|error| panic!("sql/reports/{id}.sql: {error}"))
        })
        .collect()
});

/// Every template, in id order.
pub fn templates() -> &'static [Template] {
    &TEMPLATES
}

/// The template called `id`.
pub fn template(id: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|template| template.id == id)
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(rename = "ReportTemplate")]
pub struct Template {
    pub id: &'static str,
    pub title: String,
    pub description: String,
    pub params: Vec<Param>,
    /// The whole file, header included (it is SQL comments).
    #[serde(skip)]
    pub sql: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(rename = "ReportParam")]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamKind,
    /// The value used when none is given; `None` when one must be given.
    pub default: Option<Value>,
    pub required: bool,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "ReportParamType")]
pub enum ParamKind {
    Text,
    Int,
    Date,
}

impl Template {
    fn parse(id: &'static str, sql: &'static str) -> Result<Template, String> {
        let mut template = Template {
            id,
            title: String::new(),
            description: String::new(),
            params: Vec::new(),
            sql,
        };
        for line in sql.lines().map_while(|line| line.strip_prefix("--")) {
            let line = line.trim();
            if let Some(title) = line.strip_prefix("title:") {
                template.title = title.trim().to_string();
            } else if let Some(description) = line.strip_prefix("description:") {
                template.description = description.trim().to_string();
            } else if let Some(param) = line.strip_prefix("param ") {
                template.params.push(Param::parse(param)?);
            } else {
                return Err(format!("unknown header line {line:?}"));
            }
        }
        if template.title.is_empty() {
            return Err("no `-- title:` line".into());
        }
        Ok(template)
    }

    /// The parameters to run the template with: `given` checked against the declared
    /// ones, with the defaults of those not given. The errors name each bad parameter.
    pub fn bind(&self, given: &Value) -> Result<Map<String, Value>, Vec<(String, String)>> {
        let given = match given {
            Value::Null => Map::new(),
            Value::Object(given) => given.clone(),
            _ => {
                return Err(vec![(
                    "params".into(),
                    "params is an object of the template's parameters".into(),
                )])
            }
        };
        let mut problems: Vec<(String, String)> = given
            .keys()
            .filter(|name| !self.params.iter().any(|param| param.name == **name))
            .map(|name| {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                (
                    format!("params.{name}"),
                    format!(
                        "template {} takes no parameter {name:?} (it takes: {})",
                        self.id,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })
            .collect();
        let mut bound = Map::new();
        for param in &self.params {
            let field = format!("params.{}", param.name);
            match given.get(&param.name).or(param.default.as_ref()) {
                None => problems.push((
                    field,
                    format!("give {} ({})", param.name, param.description),
                )),
                Some(value) => match param.kind.check(value) {
                    Ok(()) => {
                        bound.insert(param.name.clone(), value.clone());
                    }
                    Err(problem) => problems.push((field, problem)),
                },
            }
        }
        if problems.is_empty() {
            Ok(bound)
        } else {
            Err(problems)
        }
    }
}

impl Param {
    /// `NAME TYPE [= DEFAULT]: description`.
    fn parse(line: &str) -> Result<Param, String> {
        let (head, description) = line
            .split_once(':')
            .ok_or_else(|| format!("param {line:?} has no `: description`"))?;
        let (head, default) = match head.split_once('=') {
            Some((head, default)) => (head, Some(default.trim())),
            None => (head, None),
        };
        let mut words = head.split_whitespace();
        let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "param {line:?} is not `NAME TYPE [= DEFAULT]: description`"
            ));
        };
        let kind = match kind {
            "text" => ParamKind::Text,
            "int" => ParamKind::Int,
            "date" => ParamKind::Date,
            other => return Err(format!("param {name} has unknown type {other:?}")),
        };
        let default = match default {
            None => None,
            Some(text) => {
                let value =
                    match kind {
                        ParamKind::Int => Value::from(text.parse::<i64>().map_err(|_| {
                            format!("param {name}'s default {text:?} is not an int")
                        })?),
                        ParamKind::Text | ParamKind::Date => Value::from(text),
                    };
                kind.check(&value)?;
                Some(value)
            }
        };
        Ok(Param {
            name: name.to_string(),
            kind,
            required: default.is_none(),
            default,
            description: description.trim().to_string(),
        })
    }
}

impl ParamKind {
    fn check(self, value: &Value) -> Result<(), String> {
        match (self, value) {
            (ParamKind::Text, Value::String(_)) => Ok(()),
            (ParamKind::Int, Value::Number(number)) if number.is_i64() => Ok(()),
            (ParamKind::Date, Value::String(date)) if is_date(date) => Ok(()),
            (ParamKind::Text, _) => Err("must be a string".into()),
            (ParamKind::Int, _) => Err("must be an integer".into()),
            (ParamKind::Date, _) => Err("must be a date, YYYY-MM-DD".into()),
        }
    }
}

/// Whether `text` is a calendar date `YYYY-MM-DD`.
fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return false;
    };
    let number = |part: &str, digits: usize| {
        (part.len() == digits && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    let (Some(year), Some(month), Some(day)) = (number(year, 4), number(month, 2), number(day, 2))
    else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_template_parses_with_a_title_and_its_parameters() {
        assert_eq!(templates().len(), SOURCES.len());
        let sales = template("daily_sales").expect("daily_sales");
        assert_eq!(sales.title, "Daily sales");
        let names: Vec<&str> = sales.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["since", "until"]);
        assert!(sales
            .params
            .iter()
            .all(|p| p.kind == ParamKind::Date && !p.required));
        let refunds = template("refunds").expect("refunds");
        assert_eq!(refunds.params[0].default, Some(json!("")));
    }

    #[test]
    fn binding_fills_defaults_and_names_every_bad_parameter() {
        let top = template("top_customers").expect("top_customers");
        let bound = top.bind(&json!({"limit": 3})).expect("binds");
        assert_eq!(bound["limit"], json!(3));
        assert_eq!(bound["since"], json!("1970-01-01"));
        let problems = top
            .bind(&json!({"limit": "three", "since": "2026-02-30", "colour": "red"}))
            .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(fields, ["params.colour", "params.since", "params.limit"]);
        assert!(top.bind(&json!([1])).is_err());
    }

    #[test]
    fn dates_are_calendar_dates() {
        for good in ["2026-01-31", "2024-02-29", "1970-01-01", "9999-12-31"] {
            assert!(is_date(good), "{good}");
        }
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "20260101",
            "2026-01-00",
            "x",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }
}
