//! Effect executors: they take the calls the saga waits for (the `effects` view), make
//! them through a provider, and append the results as commands.
//!
//! Exactly-once effects: the provider is called with the effect's id as idempotency
//! key, so a call repeated after a crash (the result never reached the log) is answered
//! from the provider's memory, not made again. A result appended twice is applied once:
//! the saga refuses a result for an effect that is no longer pending.
//!
//! Effects that come due together are called together (one blocking call, one fsync of
//! the sandbox ledger) and their results appended as one log batch.
//!
//! Each provider is behind a circuit breaker (`crate::breaker`): while one keeps
//! failing, its calls are paused and their effects wait, pending, for it to recover.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectors::effects::payments::{ChargeRequest, RefundRequest};
use dataflows::model::{Command, Envelope};
use dataflows::payments;
use dataflows::views::EffectRow;
use parking_lot::Mutex;
use tracing::Instrument;

use crate::runtime::Tidemark;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Appends of one batch of results before it is left for a restart (about 25 s).
const RECORD_ATTEMPTS: u32 = 9;

/// Runs the executors until the views stop.
pub fn spawn(app: Arc<Tidemark>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut frontier = app.views.subscribe_frontier();
        loop {
            let due: Vec<EffectRow> = {
                let snapshot = app.views.read();
                let mut in_flight = in_flight.lock();
                snapshot
                    .effects
                    .values()
                    .filter(|effect| in_flight.insert(effect.effect_id().to_string()))
                    .cloned()
                    .collect()
            };
            if !due.is_empty() {
                tokio::spawn(execute_together(app.clone(), due, in_flight.clone()));
            }
            if frontier.changed().await.is_err() {
                break;
            }
        }
    })
}

/// Calls the providers for `effects` on one blocking thread and appends every result as
/// one batch. Effects that fail in a way a retry can fix go on alone, with backoff.
async fn execute_together(
    app: Arc<Tidemark>,
    effects: Vec<EffectRow>,
    in_flight: Arc<Mutex<HashSet<String>>>,
) {
    // One span for the batch, and one for each effect in it, by its order.
    let batch = tracing::info_span!(parent: None, "effects", effects = effects.len());
    let each: Vec<tracing::Span> = effects
        .iter()
        .map(|effect| effect_span(&batch, effect))
        .collect();
    let called = {
        let (app, batch) = (app.clone(), batch.clone());
        tokio::task::spawn_blocking(move || {
            let results = batch.in_scope(|| call_providers(&app, &effects));
            (effects, results)
        })
        .await
    };
    let (effects, results) = match called {
        Ok(called) => called,
        Err(error) => {
            tracing::error!(%error, "effect calls panicked; they will be retried at the next start");
            return;
        }
    };
    let mut settled = Vec::new();
    let mut commands = Vec::new();
    for (effect, result) in effects.into_iter().zip(results) {
        let id = effect.effect_id().to_string();
        match result {
            Ok(command) => {
                settled.push(id);
                commands.push(Envelope::new(command));
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(effect = %id, %error, "effect failed; retrying");
                tokio::spawn(execute(app.clone(), effect, in_flight.clone()));
            }
            Err(error) => match payments::after_permanent_failure(&effect) {
                Some(command) => {
                    tracing::error!(effect = %id, %error, "effect failed for good; recording the failure");
                    settled.push(id);
                    commands.push(Envelope::new(command));
                }
                // Stays in flight, so it is not retried in a loop; a restart retries it.
                None => {
                    tracing::error!(effect = %id, %error, "effect failed for good; it will be retried at the next start")
                }
            },
        }
    }
    if commands.is_empty() {
        return;
    }
    record(&app, commands, settled, &in_flight, |commands| {
        app.submit_all(commands)
    })
    .instrument(batch)
    .await;
    drop(each);
}

/// An effect's span: what it is, and the order whose saga it serves.
fn effect_span(parent: &tracing::Span, effect: &EffectRow) -> tracing::Span {
    let (kind, order_id) = match effect {
        EffectRow::Charge { order_id, .. } => ("charge", order_id),
        EffectRow::Refund { order_id, .. } => ("refund", order_id),
        EffectRow::Ship { order_id, .. } => ("ship", order_id),
    };
    tracing::info_span!(
        parent: parent,
        "effect",
        effect = kind,
        effect_id = %effect.effect_id(),
        correlation_id = %order_id,
    )
}

/// Appends effect results, trying a failed append again with backoff (a result
/// appended twice is applied once). After `RECORD_ATTEMPTS` failures the effects stay
/// in flight, so they are not called again in a loop, and are counted in
/// `/health/ready` (`effects_unrecorded`) until a restart retries them.
async fn record<F, Fut, T>(
    app: &Tidemark,
    commands: Vec<Envelope>,
    effect_ids: Vec<String>,
    in_flight: &Mutex<HashSet<String>>,
    submit: F,
) where
    F: Fn(Vec<Envelope>) -> Fut,
    Fut: std::future::Future<Output = crate::runtime::Result<T>>,
{
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=RECORD_ATTEMPTS {
        match submit(commands.clone()).await {
            Ok(_) => {
                let mut in_flight = in_flight.lock();
                for id in &effect_ids {
                    in_flight.remove(id);
                }
                return;
            }
            Err(error) if attempt < RECORD_ATTEMPTS => {
                tracing::warn!(%error, effects = ?effect_ids, attempt, retry_in_ms = backoff.as_millis() as u64, "could not record effect results; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(error) => {
                tracing::error!(%error, effects = ?effect_ids, attempts = RECORD_ATTEMPTS, "could not record effect results; they stay unrecorded until the next start");
                app.effects_unrecorded
                    .fetch_add(effect_ids.len(), std::sync::atomic::Ordering::AcqRel);
            }
        }
    }
}

/// One effect alone, retried with backoff while its provider says a retry can help.
async fn execute(app: Arc<Tidemark>, effect: EffectRow, in_flight: Arc<Mutex<HashSet<String>>>) {
    let span = effect_span(&tracing::Span::none(), &effect);
    execute_alone(app, effect, in_flight).instrument(span).await;
}

async fn execute_alone(
    app: Arc<Tidemark>,
    effect: EffectRow,
    in_flight: Arc<Mutex<HashSet<String>>>,
) {
    let id = effect.effect_id().to_string();
    let mut backoff = Duration::from_millis(50);
    let command = loop {
        let call = {
            let app = app.clone();
            let effect = effect.clone();
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || span.in_scope(|| call_provider(&app, &effect)))
                .await
        };
        match call {
            Ok(Ok(command)) => break command,
            Ok(Err(error)) if error.is_retryable() => {
                tracing::warn!(effect = %id, %error, retry_in_ms = backoff.as_millis() as u64, "effect failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Ok(Err(error)) => match payments::after_permanent_failure(&effect) {
                Some(command) => {
                    tracing::error!(effect = %id, %error, "effect failed for good; recording the failure");
                    break command;
                }
                None => {
                    // Stays in flight, so it is not retried in a loop; a restart retries it.
                    tracing::error!(effect = %id, %error, "effect failed for good; it will be retried at the next start");
                    return;
                }
            },
            Err(join) => {
                tracing::error!(effect = %id, error = %join, "effect call panicked; it will be retried at the next start");
                return;
            }
        }
    };
    record(
        &app,
        vec![Envelope::new(command)],
        vec![id],
        &in_flight,
        |commands| app.submit_all(commands),
    )
    .await;
}

/// The result command of each effect; charges go to the provider in one call.
fn call_providers(app: &Tidemark, effects: &[EffectRow]) -> Vec<connectors::Result<Command>> {
    let charges: Vec<ChargeRequest> = effects.iter().filter_map(charge_request).collect();
    // The breaker is asked only when there is a call to make: being let through may
    // be a probe's turn.
    let outcomes = match charges.is_empty() {
        true => Vec::new(),
        false => charge_through_breaker(app, &charges),
    };
    let mut outcomes = outcomes.into_iter();
    effects
        .iter()
        .map(|effect| match effect {
            EffectRow::Charge {
                payment_id,
                order_id,
                ..
            } => {
                let outcome = outcomes.next().unwrap_or(Err(connectors::Error::Closed))?;
                Ok(Command::PaymentResult {
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                    outcome,
                })
            }
            other => call_provider(app, other),
        })
        .collect()
}

/// The provider's outcome of each charge, or, while its circuit is open, a retryable
/// refusal of each.
fn charge_through_breaker(
    app: &Tidemark,
    charges: &[ChargeRequest],
) -> Vec<connectors::Result<dataflows::model::PaymentOutcome>> {
    match app.payment_breaker.allow(Instant::now()) {
        Ok(()) => {
            let _call = tracing::info_span!("provider.charge", charges = charges.len()).entered();
            let started = Instant::now();
            let outcomes = app.payments.charge_all(charges);
            let failed_call = outcomes.iter().any(|outcome| outcome.is_err());
            timed("payment", "charge", started, !failed_call);
            let failed = outcomes
                .iter()
                .any(|outcome| matches!(outcome, Err(error) if error.is_retryable()));
            app.payment_breaker.record(!failed, Instant::now());
            outcomes
        }
        Err(paused) => charges
            .iter()
            .map(|_| {
                Err(connectors::Error::Provider {
                    message: paused.to_string(),
                    retryable: true,
                })
            })
            .collect(),
    }
}

/// How long a call to a provider took (`tidemark_provider_call_duration_seconds`);
/// `answered` is false when the call itself failed (not a declined card).
fn timed(provider: &'static str, operation: &'static str, started: Instant, answered: bool) {
    let outcome = if answered { "answered" } else { "failed" };
    metrics::histogram!(
        "tidemark_provider_call_duration_seconds",
        "provider" => provider,
        "operation" => operation,
        "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
}

fn charge_request(effect: &EffectRow) -> Option<ChargeRequest> {
    match effect {
        EffectRow::Charge {
            payment_id,
            amount_cents,
            currency,
            card,
            ..
        } => Some(ChargeRequest {
            idempotency_key: payment_id.to_string(),
            amount_cents: *amount_cents,
            currency: currency.to_string(),
            card: card.clone(),
        }),
        _ => None,
    }
}

fn call_provider(app: &Tidemark, effect: &EffectRow) -> connectors::Result<Command> {
    let _call = tracing::info_span!("provider.call", effect_id = %effect.effect_id()).entered();
    Ok(match effect {
        EffectRow::Charge {
            payment_id,
            order_id,
            ..
        } => {
            let request = charge_request(effect).ok_or_else(|| connectors::Error::Provider {
                message: "not a charge".into(),
                retryable: false,
            })?;
            app.payment_breaker.allow(Instant::now())?;
            let started = Instant::now();
            let outcome = app.payments.charge(&request);
            timed("payment", "charge", started, outcome.is_ok());
            app.payment_breaker.observe(&outcome);
            let outcome = outcome?;
            Command::PaymentResult {
                payment_id: payment_id.clone(),
                order_id: order_id.clone(),
                outcome,
            }
        }
        EffectRow::Refund {
            refund_id,
            payment_id,
            order_id,
            amount_cents,
        } => {
            let request = RefundRequest {
                idempotency_key: refund_id.to_string(),
                payment_key: payment_id.to_string(),
                amount_cents: *amount_cents,
            };
            app.payment_breaker.allow(Instant::now())?;
            let started = Instant::now();
            let succeeded = app.payments.refund(&request);
            timed("payment", "refund", started, succeeded.is_ok());
            app.payment_breaker.observe(&succeeded);
            let succeeded = succeeded?;
            Command::RefundResult {
                refund_id: refund_id.clone(),
                payment_id: payment_id.clone(),
                order_id: order_id.clone(),
                succeeded,
            }
        }
        EffectRow::Ship {
            shipment_id,
            order_id,
            address,
        } => {
            app.carrier_breaker.allow(Instant::now())?;
            let started = Instant::now();
            let dispatch = app.carrier.dispatch(shipment_id, address.as_deref());
            timed("carrier", "dispatch", started, dispatch.is_ok());
            app.carrier_breaker.observe(&dispatch);
            let dispatch = dispatch?;
            Command::ShipmentDispatched {
                shipment_id: shipment_id.clone(),
                order_id: order_id.clone(),
                carrier: dispatch.carrier.into(),
                tracking_number: dispatch.tracking_number.into(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::config::Config;
    use crate::runtime::Error;

    /// Before, a result whose append failed left its effect in flight until a restart,
    /// tried once and never again.
    #[tokio::test(start_paused = true)]
    async fn results_are_appended_again_then_left_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let app = Tidemark::open(Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        })
        .unwrap();
        let in_flight = Mutex::new(HashSet::from(["pay_1".to_string()]));
        let tries = AtomicU32::new(0);
        record(&app, Vec::new(), vec!["pay_1".into()], &in_flight, |_| {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 | 1 => Err(Error::Log(connectors::Error::Closed)),
                    _ => Ok(()),
                }
            }
        })
        .await;
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert!(
            in_flight.lock().is_empty(),
            "recorded, so no longer in flight"
        );
        assert_eq!(app.effects_unrecorded.load(Ordering::SeqCst), 0);

        in_flight.lock().insert("pay_2".into());
        let tries = AtomicU32::new(0);
        record(&app, Vec::new(), vec!["pay_2".into()], &in_flight, |_| {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Error::Log(connectors::Error::Closed)) }
        })
        .await;
        assert_eq!(tries.load(Ordering::SeqCst), RECORD_ATTEMPTS);
        assert!(
            in_flight.lock().contains("pay_2"),
            "not called again in a loop"
        );
        assert_eq!(app.effects_unrecorded.load(Ordering::SeqCst), 1);
        app.shutdown();
    }
}
