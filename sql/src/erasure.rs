//! Deleted users' personal data, erased from what SQL reads of the history.
//!
//! The history is append-only Parquet: every event as it happened, kept for audits and
//! reports. A deleted user's events stay in it (their orders, payments and shipments
//! are the shop's records), but the `events` table answers them with the personal data
//! erased: names, e-mail addresses, network addresses, postal addresses, profile
//! fields and support conversations (a ticket's subject and messages) become
//! `"[erased]"` in `data` for every event that names the user, one of their orders or
//! one of their tickets. The user's id stays: it names no one once the user is gone.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StringViewArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;

/// What stands in for erased data.
pub const ERASED: &str = "[erased]";

/// The fields of an event's data that hold personal data.
const PERSONAL: [&str; 9] = [
    "email",
    "name",
    "display_name",
    "locale",
    "client",
    "shipping_address",
    "address",
    "subject",
    "body",
];

/// The deleted users, and their orders and support tickets (whose events do not all
/// name the user).
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct Erased {
    pub users: BTreeSet<String>,
    pub orders: BTreeSet<String>,
    pub tickets: BTreeSet<String>,
}

impl Erased {
    /// The deleted users of `snapshot`, and their orders.
    pub fn of(snapshot: &queries::Snapshot) -> Erased {
        let mut erased = Erased::default();
        for user in snapshot.erased_users.values() {
            erased.users.insert(user.user_id.to_string());
            erased.orders.extend(
                snapshot
                    .orders_of(&user.user_id, None)
                    .map(|(_, order)| order.order_id.to_string()),
            );
            erased.tickets.extend(
                (snapshot.tickets_of(&user.user_id, "")).map(|ticket| ticket.ticket_id.to_string()),
            );
        }
        erased
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether an event's data (JSON text) names an erased user, order or ticket.
    fn names(&self, data: &str) -> bool {
        ids(data, "\"user_id\":\"").any(|id| self.users.contains(id))
            || ids(data, "\"order_id\":\"").any(|id| self.orders.contains(id))
            || ids(data, "\"ticket_id\":\"").any(|id| self.tickets.contains(id))
    }

    /// `data` with its personal fields erased, if it names an erased user or order.
    pub fn erase<'a>(&self, data: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.names(data) {
            return std::borrow::Cow::Borrowed(data);
        }
        match serde_json::from_str::<Value>(data) {
            Ok(mut value) => {
                erase_fields(&mut value);
                std::borrow::Cow::Owned(value.to_string())
            }
            // Not JSON: nothing can be told apart in it, so none of it is shown.
            Err(_) => std::borrow::Cow::Borrowed(ERASED),
        }
    }
}

/// The string values following `key` (`"user_id":"`) in JSON text: ids, which serde
/// writes without escapes.
fn ids<'a>(data: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    data.match_indices(key).filter_map(move |(at, _)| {
        let rest = &data[at + key.len()..];
        rest.find('"').map(|end| &rest[..end])
    })
}

fn erase_fields(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if PERSONAL.contains(&name.as_str()) && field.is_string() {
                    *field = Value::String(ERASED.into());
                } else {
                    erase_fields(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(erase_fields),
        _ => {}
    }
}

/// `erase_personal_data(data)`: the history's `data` column as SQL reads it.
#[derive(Debug)]
pub struct ErasePersonalData {
    erased: Arc<Erased>,
    signature: Signature,
}

impl ErasePersonalData {
    pub fn new(erased: Arc<Erased>) -> ErasePersonalData {
        ErasePersonalData {
            erased,
            signature: Signature::uniform(
                1,
                vec![DataType::Utf8View, DataType::Utf8],
                Volatility::Immutable,
            ),
        }
    }
}

impl PartialEq for ErasePersonalData {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.erased, &other.erased)
    }
}

impl Eq for ErasePersonalData {}

impl std::hash::Hash for ErasePersonalData {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.erased).hash(state);
    }
}

impl ScalarUDFImpl for ErasePersonalData {
    fn name(&self) -> &str {
        "erase_personal_data"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        Ok(arguments.first().cloned().unwrap_or(DataType::Utf8View))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let data = &arrays[0];
        let erased: ArrayRef = match data.data_type() {
            DataType::Utf8View => Arc::new(
                data.as_string_view()
                    .iter()
                    .map(|row| row.map(|text| self.erased.erase(text)))
                    .collect::<StringViewArray>(),
            ),
            DataType::Utf8 => Arc::new(
                data.as_string::<i32>()
                    .iter()
                    .map(|row| row.map(|text| self.erased.erase(text)))
                    .collect::<StringArray>(),
            ),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "erase_personal_data takes text, not {other}"
                )))
            }
        };
        debug_assert_eq!(erased.len(), data.len());
        Ok(ColumnarValue::Array(erased))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_naming_an_erased_user_or_order_lose_their_personal_data() {
        let erased = Erased {
            users: ["usr_gone".to_string()].into(),
            orders: ["ord_gone".to_string()].into(),
            tickets: ["tkt_gone".to_string()].into(),
        };
        let created = r#"{"user_id":"usr_gone","email":"ann@example.com","name":"Ann"}"#;
        let value: Value = serde_json::from_str(&erased.erase(created)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"user_id": "usr_gone", "email": ERASED, "name": ERASED})
        );
        let updated = r#"{"user_id":"usr_gone","email":"a@b.c","name":"A","profile":{"display_name":"Annie","locale":"en-GB","marketing_emails":false}}"#;
        let value: Value = serde_json::from_str(&erased.erase(updated)).unwrap();
        assert_eq!(value["profile"]["display_name"], ERASED);
        assert_eq!(value["profile"]["marketing_emails"], false);
        let shipped = r#"{"shipment_id":"shp_1","order_id":"ord_gone","address":"1 Main St"}"#;
        assert!(erased.erase(shipped).contains(r#""address":"[erased]""#));
        // A ticket's conversation, the staff's answers too: they may quote the user.
        let answered = r#"{"ticket_id":"tkt_gone","comment_id":"c1","author_id":"key:k1","staff":true,"body":"Your address is 1 Main St?"}"#;
        let value: Value = serde_json::from_str(&erased.erase(answered)).unwrap();
        assert_eq!(
            (value["body"].as_str(), value["staff"].as_bool()),
            (Some(ERASED), Some(true))
        );
        // Others', and events without personal fields, are left as they are.
        for kept in [
            r#"{"user_id":"usr_here","email":"bob@example.com"}"#,
            r#"{"order_id":"ord_other","shipping_address":"2 Main St"}"#,
            r#"{"user_id":"usr_gone_not","email":"x@example.com"}"#,
            r#"{"ticket_id":"tkt_other","subject":"Hello","body":"Hi"}"#,
        ] {
            assert_eq!(erased.erase(kept), kept);
        }
        let paid = r#"{"order_id":"ord_gone","amount_cents":100}"#;
        let value: Value = serde_json::from_str(&erased.erase(paid)).unwrap();
        assert_eq!(value["amount_cents"], 100);
    }
}
