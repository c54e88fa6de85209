//! Field checks that collect every problem of a request before answering 422.

use super::error::{ApiError, FieldError};

#[derive(Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.errors.push(FieldError::new(field, message));
        }
        self
    }

    pub fn text(&mut self, value: &str, field: &str, max: usize) -> &mut Self {
        let length = value.trim().chars().count();
        self.check(
            length > 0 && length <= max,
            field,
            &format!("must be 1 to {max} characters"),
        )
    }

    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(std::mem::take(&mut self.errors)))
        }
    }
}

/// An ISO 4217-shaped code, upper-cased: three ASCII letters.
pub fn currency(code: &str) -> Option<String> {
    (code.len() == 3 && code.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn email(address: &str) -> bool {
    let address = address.trim();
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    address.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Ids in paths and bodies: short, printable.
pub fn id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Most units a single line, adjustment or cart entry may carry.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Most money a single price may state (minor units). With at most 1,000,000 units a
/// line and 100 lines an order, no total can overflow an i64.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;
