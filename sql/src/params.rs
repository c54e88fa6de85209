//! A query's parameters from JSON: an object binds `$name`, an array binds `$1`, `$2`, ...

use datafusion::common::{ParamValues, ScalarValue};
use serde_json::Value;

use crate::QueryError;

/// The parameters of `params` (`null` or absent: none).
pub fn from_json(params: &Value) -> Result<Option<ParamValues>, QueryError> {
    match params {
        Value::Null => Ok(None),
        Value::Object(named) => {
            let mut values = Vec::with_capacity(named.len());
            for (name, value) in named {
                let bare = name.strip_prefix('$').unwrap_or(name);
                if bare.is_empty() || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(QueryError::Parameter(format!(
                        "parameter name {name:?} is not a name: use letters, digits and _"
                    )));
                }
                values.push((bare.to_string(), scalar(bare, value)?));
            }
            Ok(Some(values.into()))
        }
        Value::Array(positional) => {
            let values = positional
                .iter()
                .enumerate()
                .map(|(index, value)| scalar(&(index + 1).to_string(), value))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(values.into()))
        }
        _ => Err(QueryError::Parameter(
            "params is an object of named parameters or an array of positional ones".into(),
        )),
    }
}

fn scalar(name: &str, value: &Value) -> Result<ScalarValue, QueryError> {
    Ok(match value {
        Value::Null => ScalarValue::Null,
        Value::Bool(flag) => ScalarValue::Boolean(Some(*flag)),
        Value::String(text) => ScalarValue::Utf8(Some(text.clone())),
        Value::Number(number) => match (number.as_i64(), number.as_f64()) {
            (Some(integer), _) => ScalarValue::Int64(Some(integer)),
            (None, Some(float)) if number.is_f64() => ScalarValue::Float64(Some(float)),
            _ => {
                return Err(QueryError::Parameter(format!(
                    "parameter ${name} is {number}, outside the 64-bit integers"
                )))
            }
        },
        Value::Array(_) | Value::Object(_) => {
            return Err(QueryError::Parameter(format!(
                "parameter ${name} is a list or an object; a parameter is a string, a \
                 number, a boolean or null"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_positions_and_kinds() {
        let named =
            from_json(&json!({"day": "2026-11-29", "$n": 3, "x": 1.5, "b": true, "z": null}))
                .unwrap()
                .unwrap();
        let ParamValues::Map(named) = named else {
            panic!("named parameters")
        };
        assert_eq!(
            named["day"].value,
            ScalarValue::Utf8(Some("2026-11-29".into()))
        );
        assert_eq!(named["n"].value, ScalarValue::Int64(Some(3)));
        assert_eq!(named["x"].value, ScalarValue::Float64(Some(1.5)));
        assert_eq!(named["b"].value, ScalarValue::Boolean(Some(true)));
        assert_eq!(named["z"].value, ScalarValue::Null);
        let ParamValues::List(listed) = from_json(&json!([1, "a"])).unwrap().unwrap() else {
            panic!("positional parameters")
        };
        assert_eq!(listed.len(), 2);
        assert!(from_json(&Value::Null).unwrap().is_none());
    }

    #[test]
    fn refuses_what_has_no_sql_value() {
        for bad in [
            json!({"a": [1]}),
            json!({"a": {"b": 1}}),
            json!({"bad name": 1}),
            json!({"": 1}),
            json!({"big": 18446744073709551615u64}),
            json!("text"),
            json!(7),
        ] {
            assert!(
                matches!(from_json(&bad), Err(QueryError::Parameter(_))),
                "{bad}"
            );
        }
    }
}
