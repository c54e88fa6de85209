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

    /// Free text a person typed (names, skus, reasons): 1 to `max` characters, none of
    /// them invisible or able to reorder what a reader sees.
    pub fn text(&mut self, value: &str, field: &str, max: usize) -> &mut Self {
        let length = value.trim().chars().count();
        if !(length > 0 && length <= max) {
            return self.check(false, field, &format!("must be 1 to {max} characters"));
        }
        self.check(
            !value.chars().any(hidden),
            field,
            "must not contain control, zero-width or bidirectional-override characters",
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

/// A BCP 47 language tag as browsers send them: a 2-3 letter language, then subtags
/// of 1-8 letters or digits (`en`, `en-GB`, `zh-Hant-TW`, `es-419`), 35 characters at most.
pub fn language_tag(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let language = subtags.next().unwrap_or("");
    tag.len() <= 35
        && (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_alphabetic())
        && subtags.all(|subtag| {
            (1..=8).contains(&subtag.len()) && subtag.chars().all(|c| c.is_ascii_alphanumeric())
        })
}

/// An ISO 4217-shaped code, upper-cased: three ASCII letters.
pub fn currency(code: &str) -> Option<String> {
    (code.len() == 3 && code.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// Characters a reader cannot see, or that reorder the text around them: controls,
/// zero-width characters and the bidirectional embeddings, overrides and isolates
/// (the "Trojan Source" characters).
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}' | '\u{00AD}')
}

/// An address as mail systems accept it: a dot-atom local part (RFC 5322, without
/// quoted strings), `@`, and a domain of dot-separated labels of letters, digits and
/// inner hyphens (internationalised labels allowed), at least two labels.
pub fn email(address: &str) -> bool {
    let address = address.trim();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let atom_char = |c: char| {
        c.is_ascii_alphanumeric()
            || "!#$%&'*+/=?^_`{|}~-".contains(c)
            || (!c.is_ascii() && !hidden(c) && !c.is_whitespace())
    };
    let dot_atom = |text: &str, part_ok: &dyn Fn(&str) -> bool| {
        !text.is_empty() && text.split('.').all(part_ok)
    };
    let label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    address.len() <= 254
        && local.len() <= 64
        && dot_atom(local, &|atom: &str| {
            !atom.is_empty() && atom.chars().all(atom_char)
        })
        && dot_atom(domain, &label)
        && domain.contains('.')
}

/// Ids in paths and bodies: short, printable.
pub fn id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub use dataflows::catalog::{MAX_PRICE_CENTS, MAX_QUANTITY};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_as_browsers_send_them() {
        for good in ["en", "en-GB", "zh-Hant-TW", "es-419", "gsw"] {
            assert!(language_tag(good), "{good}");
        }
        for bad in [
            "",
            "e",
            "english",
            "en_GB",
            "en-",
            "en--GB",
            "en-GB-toolongsubtag",
            "1n",
        ] {
            assert!(!language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn emails_as_mail_systems_take_them() {
        for good in [
            "a@b.co",
            "first.last+tag@mail.example.com",
            "o'neil@x-y.example",
            "jürgen@bücher.example",
        ] {
            assert!(email(good), "{good}");
        }
        for bad in [
            "x@a..b",
            "x@.a.b",
            "x@a.b.",
            ".x@a.b",
            "x.@a.b",
            "x..y@a.b",
            "x@a",
            "x@-a.b",
            "x@a-.b",
            "a b@c.d",
            "x@@a.b",
            "@a.b",
            "x@a_b.c",
            "x\u{202E}@a.b",
        ] {
            assert!(!email(bad), "{bad}");
        }
    }

    #[test]
    fn text_refuses_hidden_characters() {
        for bad in [
            "a\u{202E}b",
            "zero\u{200B}width",
            "tab\tin",
            "bom\u{FEFF}",
            "iso\u{2066}late",
        ] {
            assert!(
                Validator::default()
                    .text(bad, "name", 200)
                    .finish()
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(Validator::default()
            .text("Crème brûlée – 2 kg", "name", 200)
            .finish()
            .is_ok());
    }
}
