//! Payment providers. The sandbox behaves like a card processor's test mode: fixed test
//! numbers decline or are flagged as fraud, any other Luhn-valid number is approved,
//! and a charge made twice with one idempotency key is made once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use dataflows::model::{CardToken, PaymentOutcome, Str};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Card numbers with a fixed behaviour in the sandbox.
pub const CARD_DECLINED: &str = "4000000000000002";
pub const CARD_INSUFFICIENT_FUNDS: &str = "4000000000009995";
pub const CARD_FRAUD: &str = "4100000000000019";

#[derive(Debug, PartialEq, Eq)]
pub enum CardError {
    /// The number is not 12-19 digits or fails the Luhn check.
    InvalidNumber,
    InvalidExpiry,
    InvalidCvc,
}

impl CardError {
    /// The field of a card payment method the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            CardError::InvalidNumber => "card_number",
            CardError::InvalidExpiry => "exp_month",
            CardError::InvalidCvc => "cvc",
        }
    }
}

impl std::fmt::Display for CardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CardError::InvalidNumber => "card_number is not a valid card number",
            CardError::InvalidExpiry => "exp_month/exp_year is not a valid future expiry",
            CardError::InvalidCvc => "cvc must be 3 or 4 digits",
        })
    }
}

/// Luhn checksum of a string of digits.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (index, ch) in digits.chars().rev().enumerate() {
        let Some(mut digit) = ch.to_digit(10) else {
            return false;
        };
        if index % 2 == 1 {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
    }
    sum % 10 == 0
}

fn card_token(number: &str) -> String {
    let digest = Sha256::digest(format!("tidemark-card:{number}").as_bytes());
    format!("tok_{}", &hex::encode(digest)[..24])
}

/// Checks a card and replaces its number with a token; the number itself and the CVC
/// never go further. `now` is `(year, month)`, for the expiry check.
pub fn tokenize_card(
    number: &str,
    exp_month: u8,
    exp_year: u16,
    cvc: &str,
    now: (u16, u8),
) -> Result<CardToken, CardError> {
    let number: String = number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(12..=19).contains(&number.len())
        || !number.chars().all(|c| c.is_ascii_digit())
        || !luhn_valid(&number)
    {
        return Err(CardError::InvalidNumber);
    }
    if !(1..=12).contains(&exp_month) || (exp_year, exp_month) < now || exp_year > now.0 + 50 {
        return Err(CardError::InvalidExpiry);
    }
    if !(3..=4).contains(&cvc.len()) || !cvc.chars().all(|c| c.is_ascii_digit()) {
        return Err(CardError::InvalidCvc);
    }
    let brand = match number.as_bytes()[0] {
        b'4' => "visa",
        b'5' | b'2' => "mastercard",
        b'3' => "amex",
        b'6' => "discover",
        _ => "unknown",
    };
    Ok(CardToken {
        token: card_token(&number).into(),
        brand: brand.into(),
        last4: number[number.len() - 4..].into(),
        exp_month,
        exp_year,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The same key always yields the same charge, however often it is sent.
    pub idempotency_key: String,
    pub amount_cents: i64,
    pub currency: String,
    pub card: CardToken,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub payment_key: String,
    pub amount_cents: i64,
}

pub trait PaymentProvider: Send + Sync + 'static {
    fn charge(&self, request: &ChargeRequest) -> Result<PaymentOutcome>;
    /// Several charges at once; a provider that can share work between them (the
    /// sandbox shares one fsync of its ledger) overrides this.
    fn charge_all(&self, requests: &[ChargeRequest]) -> Vec<Result<PaymentOutcome>> {
        requests
            .iter()
            .map(|request| self.charge(request))
            .collect()
    }
    /// `Ok(true)` when the money went back.
    fn refund(&self, request: &RefundRequest) -> Result<bool>;
}

/// The first 16 bytes of an idempotency key's SHA-256: collisions are out of reach.
type KeyDigest = [u8; 16];

fn key_digest(key: &str) -> KeyDigest {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0; 16];
    first.copy_from_slice(&digest[..16]);
    first
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LedgerEntry {
    key: String,
    #[serde(flatten)]
    answer: Answer,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Answer {
    Charge {
        outcome: PaymentOutcome,
        amount_cents: i64,
    },
    Refund {
        succeeded: bool,
        amount_cents: i64,
    },
}

/// The decline codes the sandbox gives, so that an answer in memory names one by index.
const DECLINE_CODES: [&str; 3] = ["card_declined", "insufficient_funds", "fraudulent"];

/// The id of the charge made for a key: derived from the key's digest, so the ledger
/// need not hold it.
fn charge_id(digest: &KeyDigest) -> Str {
    format!("ch_{}", hex::encode(&digest[..12])).into()
}

/// An answer as memory holds it: 16 bytes, as an answer the sandbox gives is rebuilt
/// from its kind, its amount, an index into `DECLINE_CODES` and the key's digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Approved { amount_cents: i64 },
    Declined { code: u8, amount_cents: i64 },
    Fraud { code: u8, amount_cents: i64 },
    Refund { succeeded: bool, amount_cents: i64 },
}

impl Held {
    /// The compact form of `answer`, when rebuilding it for `digest` gives it back.
    fn of(digest: &KeyDigest, answer: &Answer) -> Option<Held> {
        let code_of = |text: &str| DECLINE_CODES.iter().position(|code| *code == text);
        let held = match answer {
            Answer::Charge {
                outcome,
                amount_cents,
            } => {
                let amount_cents = *amount_cents;
                match outcome {
                    PaymentOutcome::Approved { charge_id: id } => {
                        (**id == *charge_id(digest)).then_some(Held::Approved { amount_cents })?
                    }
                    PaymentOutcome::Declined { decline_code } => Held::Declined {
                        code: code_of(decline_code)? as u8,
                        amount_cents,
                    },
                    PaymentOutcome::Fraud { decline_code } => Held::Fraud {
                        code: code_of(decline_code)? as u8,
                        amount_cents,
                    },
                }
            }
            Answer::Refund {
                succeeded,
                amount_cents,
            } => Held::Refund {
                succeeded: *succeeded,
                amount_cents: *amount_cents,
            },
        };
        Some(held)
    }

    fn answer(self, digest: &KeyDigest) -> Answer {
        let code = |index: u8| Str::from(DECLINE_CODES[index as usize]);
        match self {
            Held::Approved { amount_cents } => Answer::Charge {
                outcome: PaymentOutcome::Approved {
                    charge_id: charge_id(digest),
                },
                amount_cents,
            },
            Held::Declined {
                code: index,
                amount_cents,
            } => Answer::Charge {
                outcome: PaymentOutcome::Declined {
                    decline_code: code(index),
                },
                amount_cents,
            },
            Held::Fraud {
                code: index,
                amount_cents,
            } => Answer::Charge {
                outcome: PaymentOutcome::Fraud {
                    decline_code: code(index),
                },
                amount_cents,
            },
            Held::Refund {
                succeeded,
                amount_cents,
            } => Answer::Refund {
                succeeded,
                amount_cents,
            },
        }
    }
}

/// The ledger's answers by the digest of their idempotency key (16 bytes instead of
/// the key's string), compact where they can be, whole where they cannot (a ledger
/// written with other rules).
#[derive(Default)]
struct Answers {
    held: HashMap<KeyDigest, Held>,
    whole: HashMap<KeyDigest, Answer>,
}

impl Answers {
    fn get(&self, digest: &KeyDigest) -> Option<Answer> {
        match self.held.get(digest) {
            Some(held) => Some(held.answer(digest)),
            None => self.whole.get(digest).cloned(),
        }
    }

    fn insert(&mut self, digest: KeyDigest, answer: Answer) {
        match Held::of(&digest, &answer) {
            Some(held) => {
                self.held.insert(digest, held);
            }
            None => {
                self.whole.insert(digest, answer);
            }
        }
    }

    fn remove(&mut self, digest: &KeyDigest) {
        self.held.remove(digest);
        self.whole.remove(digest);
    }

    fn approved_charges(&self) -> usize {
        let held = self
            .held
            .values()
            .filter(|held| matches!(held, Held::Approved { .. }))
            .count();
        let whole = self
            .whole
            .values()
            .filter(|answer| {
                matches!(
                    answer,
                    Answer::Charge {
                        outcome: PaymentOutcome::Approved { .. },
                        ..
                    }
                )
            })
            .count();
        held + whole
    }
}

/// The default provider: deterministic test-mode rules, with a durable ledger of the
/// answers it gave so that a retry after a crash gets the same answer and no new charge.
pub struct SandboxPayments {
    path: PathBuf,
    /// The ledger file and its answers: one entry per charge is held for good.
    state: Mutex<(File, Answers)>,
    declined: [String; 2],
    fraud: String,
}

impl SandboxPayments {
    pub fn open(path: impl AsRef<Path>) -> Result<SandboxPayments> {
        let path = path.as_ref().to_path_buf();
        let mut answers = Answers::default();
        if path.exists() {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|e| Error::io(&path, e))?;
                // A torn last line is a charge whose answer never left the provider.
                if let Ok(entry) = serde_json::from_str::<LedgerEntry>(&line) {
                    answers.insert(key_digest(&entry.key), entry.answer);
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(SandboxPayments {
            path,
            state: Mutex::new((file, answers)),
            declined: [
                card_token(CARD_DECLINED),
                card_token(CARD_INSUFFICIENT_FUNDS),
            ],
            fraud: card_token(CARD_FRAUD),
        })
    }

    /// How many distinct charges the sandbox has made (approved ones).
    pub fn charges_made(&self) -> usize {
        self.state.lock().1.approved_charges()
    }

    /// Records the answers for keys not seen before (one write and one fsync for all
    /// of them) and returns, for every key, the answer the ledger holds.
    fn record(&self, decided: Vec<(String, Answer)>) -> Result<Vec<Answer>> {
        let mut state = self.state.lock();
        let mut lines = Vec::new();
        let mut added = Vec::new();
        let mut answers = Vec::with_capacity(decided.len());
        for (key, answer) in decided {
            let digest = key_digest(&key);
            if let Some(held) = state.1.get(&digest) {
                answers.push(held);
                continue;
            }
            serde_json::to_writer(
                &mut lines,
                &LedgerEntry {
                    key,
                    answer: answer.clone(),
                },
            )
            .map_err(|e| Error::Provider {
                message: e.to_string(),
                retryable: false,
            })?;
            lines.push(b'\n');
            state.1.insert(digest, answer.clone());
            added.push(digest);
            answers.push(answer);
        }
        if !lines.is_empty() {
            if let Err(error) = state.0.write_all(&lines).and_then(|_| state.0.sync_data()) {
                // Not durable, so not given: a retry decides again.
                for key in added {
                    state.1.remove(&key);
                }
                return Err(Error::io(&self.path, error));
            }
        }
        Ok(answers)
    }

    /// What test mode answers to a charge: fixed by the card's token.
    fn decide_charge(&self, request: &ChargeRequest) -> Answer {
        let token = &request.card.token;
        let outcome = if **token == *self.declined[0] {
            PaymentOutcome::Declined {
                decline_code: DECLINE_CODES[0].into(),
            }
        } else if **token == *self.declined[1] {
            PaymentOutcome::Declined {
                decline_code: DECLINE_CODES[1].into(),
            }
        } else if **token == *self.fraud {
            PaymentOutcome::Fraud {
                decline_code: DECLINE_CODES[2].into(),
            }
        } else {
            PaymentOutcome::Approved {
                charge_id: charge_id(&key_digest(&request.idempotency_key)),
            }
        };
        Answer::Charge {
            outcome,
            amount_cents: request.amount_cents,
        }
    }
}

fn charge_outcome(answer: Answer) -> Result<PaymentOutcome> {
    match answer {
        Answer::Charge { outcome, .. } => Ok(outcome),
        Answer::Refund { .. } => Err(Error::Provider {
            message: "idempotency key reused for a refund".into(),
            retryable: false,
        }),
    }
}

impl PaymentProvider for SandboxPayments {
    fn charge(&self, request: &ChargeRequest) -> Result<PaymentOutcome> {
        let answer = self.record(vec![(
            request.idempotency_key.clone(),
            self.decide_charge(request),
        )])?;
        answer
            .into_iter()
            .next()
            .map(charge_outcome)
            .unwrap_or_else(|| Err(Error::Closed))
    }

    fn charge_all(&self, requests: &[ChargeRequest]) -> Vec<Result<PaymentOutcome>> {
        let decided = requests
            .iter()
            .map(|request| (request.idempotency_key.clone(), self.decide_charge(request)))
            .collect();
        match self.record(decided) {
            Ok(answers) => answers.into_iter().map(charge_outcome).collect(),
            Err(error) => {
                let message = error.to_string();
                requests
                    .iter()
                    .map(|_| {
                        Err(Error::Provider {
                            message: message.clone(),
                            retryable: true,
                        })
                    })
                    .collect()
            }
        }
    }

    fn refund(&self, request: &RefundRequest) -> Result<bool> {
        let answer = Answer::Refund {
            succeeded: true,
            amount_cents: request.amount_cents,
        };
        match self
            .record(vec![(request.idempotency_key.clone(), answer)])?
            .into_iter()
            .next()
        {
            Some(Answer::Refund { succeeded, .. }) => Ok(succeeded),
            _ => Err(Error::Provider {
                message: "idempotency key reused for a charge".into(),
                retryable: false,
            }),
        }
    }
}
