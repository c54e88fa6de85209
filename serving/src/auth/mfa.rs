//! Two-factor sign-in: TOTP codes (RFC 6238 with SHA-1, 6 digits and 30-second steps,
//! what authenticator apps expect) and recovery codes.
//!
//! A user's TOTP secret is an HMAC of their enrollment id under this server's secret
//! (`<data_dir>/keys/mfa.secret`), so neither the log nor the views ever hold it: the
//! log holds the enrollment id, and the server derives the secret again when a code is
//! checked. Which time step a code matched goes into the log with the sign-in, where the
//! sign-in aggregate lets each step through once. Recovery codes are logged as SHA-256
//! digests; they are random enough (50 bits each) for a fast digest.

use dataflows::model::{SecondFactor, Str};
use dataflows::views::UserRow;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, TOTP};

/// Seconds per code.
pub const PERIOD_S: u64 = 30;
pub const DIGITS: usize = 6;
/// Recovery codes given at enrollment.
pub const RECOVERY_CODES: usize = 10;
/// Letters and digits that cannot be mistaken for each other.
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

pub struct Mfa {
    secret: [u8; 32],
    issuer: String,
}

impl Mfa {
    pub fn open(path: &std::path::Path, issuer: &str) -> std::io::Result<Mfa> {
        Ok(Mfa {
            secret: super::tokens::private_secret(path)?,
            issuer: issuer.to_string(),
        })
    }

    /// The code generator of one enrollment, labelled with the user's address.
    pub fn totp(&self, user_id: &str, enrollment_id: &str, account: &str) -> TOTP {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(b"totp\0");
        mac.update(user_id.as_bytes());
        mac.update(b"\0");
        mac.update(enrollment_id.as_bytes());
        let secret = mac.finalize().into_bytes()[..20].to_vec();
        let build = |issuer: Option<&str>, account: &str| {
            TOTP::new(
                Algorithm::SHA1,
                DIGITS,
                1,
                PERIOD_S,
                secret.clone(),
                issuer.map(str::to_string),
                account.to_string(),
            )
        };
        // An issuer or an address with a `:` cannot label a URI: the user id can.
        let issuer = Some(self.issuer.as_str());
        build(issuer, account)
            .or_else(|_| build(issuer, user_id))
            .or_else(|_| build(None, &user_id.replace(':', "_")))
            .expect("a 160-bit secret and a label without `:` make a TOTP")
    }

    /// The time step `code` belongs to at `now_s` (Unix seconds), allowing one step of
    /// clock difference either way; none when it matches no step.
    pub fn step_of(totp: &TOTP, code: &str, now_s: u64) -> Option<u64> {
        let code = code.trim();
        if !looks_like_totp(code) {
            return None;
        }
        let now_step = now_s / PERIOD_S;
        (now_step.saturating_sub(1)..=now_step + 1).find(|step| {
            let expected = totp.generate(step * PERIOD_S);
            constant_time_eq(expected.as_bytes(), code.as_bytes())
        })
    }

    /// What the code sent with a sign-in comes to, for a user with two factors on.
    pub fn second_factor(
        &self,
        user: &UserRow,
        code: Option<&str>,
        now_s: u64,
    ) -> Option<SecondFactor> {
        let code = code?.trim();
        let enrollment = user.mfa_enrollment.as_ref()?;
        if looks_like_totp(code) {
            let totp = self.totp(&user.user_id, enrollment, &user.email);
            return Some(match Mfa::step_of(&totp, code, now_s) {
                Some(step) => SecondFactor::Totp {
                    enrollment_id: enrollment.clone(),
                    step,
                },
                None => SecondFactor::Invalid,
            });
        }
        Some(match recovery_digest(code) {
            Some(code_hash) => SecondFactor::RecoveryCode {
                code_hash: code_hash.into(),
            },
            None => SecondFactor::Invalid,
        })
    }
}

/// New recovery codes, `xxxxx-xxxxx` each.
pub fn recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            getrandom::fill(&mut bytes).expect("the OS random source works");
            let letters: String = bytes
                .iter()
                .map(|b| RECOVERY_ALPHABET[*b as usize % RECOVERY_ALPHABET.len()] as char)
                .collect();
            format!("{}-{}", &letters[..5], &letters[5..])
        })
        .collect()
}

/// The digest a recovery code is logged as: of its letters, lower-cased, without the
/// dash or spaces; none for text that cannot be a recovery code.
pub fn recovery_digest(code: &str) -> Option<String> {
    let letters: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (letters.len() == 10 && letters.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)))
        .then(|| hex::encode(Sha256::digest(letters.as_bytes())))
}

/// Whether `code` has the shape of an authenticator app's code: `DIGITS` digits.
fn looks_like_totp(code: &str) -> bool {
    code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The digests of `codes`, for the log.
pub fn digests(codes: &[String]) -> Vec<Str> {
    codes
        .iter()
        .filter_map(|code| recovery_digest(code))
        .map(Str::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mfa() -> Mfa {
        Mfa {
            secret: [7; 32],
            issuer: "tidemark".into(),
        }
    }

    #[test]
    fn a_code_matches_its_step_and_the_steps_beside_it_only() {
        let totp = mfa().totp("usr_1", "mfa_1", "ann@example.com");
        let now = 1_800_000_000;
        let code = totp.generate(now);
        assert_eq!(Mfa::step_of(&totp, &code, now), Some(now / PERIOD_S));
        assert_eq!(
            Mfa::step_of(&totp, &code, now + PERIOD_S),
            Some(now / PERIOD_S)
        );
        assert_eq!(Mfa::step_of(&totp, &code, now + 3 * PERIOD_S), None);
        assert_eq!(Mfa::step_of(&totp, "12345", now), None);
        // Another enrollment has another secret.
        let other = mfa().totp("usr_1", "mfa_2", "ann@example.com");
        assert_ne!(other.generate(now), code);
        assert!(totp
            .get_url()
            .starts_with("otpauth://totp/tidemark:ann%40example.com?secret="));
    }

    #[test]
    fn recovery_codes_are_read_loosely_and_digested() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(code.len(), 11);
        let digest = recovery_digest(code).expect("a recovery code");
        assert_eq!(
            recovery_digest(&code.to_uppercase().replace('-', " ")),
            Some(digest)
        );
        assert_eq!(recovery_digest("123456"), None);
        assert_eq!(digests(&codes).len(), RECOVERY_CODES);
    }
}
