//! `tidemark demo`: seeds a catalog across warehouses and a crowd of shoppers on a
//! running server, then drives shop-like traffic through the real HTTP API at a chosen
//! rate, so the dashboards move at once. Popularity follows Zipf's law; some shoppers
//! fill carts and walk away, some cards are declined or fraudulent, some orders are
//! cancelled or refunded, shipments are delivered, and stock is received when it runs
//! out. Everything goes through the same command path as any client's requests.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, Method, Request, StatusCode};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Flags of `tidemark demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "TIDEMARK_URL")]
    pub server: String,
    /// An admin API key (the bootstrap key): the demo creates products and users and
    /// orders on their behalf.
    #[arg(long, env = "TIDEMARK_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Shopper visits started per second (most end in an order).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// How long to run (`90s`, `10m`); until interrupted when not given.
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// Products in the seeded catalog.
    #[arg(long, default_value_t = 40)]
    pub products: usize,
    /// Shoppers signed up.
    #[arg(long, default_value_t = 25)]
    pub users: usize,
    /// Seed of the shoppers' choices: the same seed makes the same choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Zipf's exponent for product popularity: the first product sells about twice as
/// often as the second, ten times as often as the tenth.
const ZIPF_EXPONENT: f64 = 1.0;
/// How long to wait for a server still replaying its log.
const READY_PATIENCE: Duration = Duration::from_secs(600);
/// Requests a visit may have out at once, across visits.
const MAX_IN_FLIGHT: usize = 64;

const WAREHOUSES: [&str; 3] = ["wh-east", "wh-west", "wh-central"];
const NOUNS: [&str; 10] = [
    "Mug",
    "Lamp",
    "Kettle",
    "Scarf",
    "Notebook",
    "Backpack",
    "Headphones",
    "Plant pot",
    "Teapot",
    "Blanket",
];
const ADJECTIVES: [&str; 8] = [
    "Blue", "Oak", "Linen", "Copper", "Travel", "Classic", "Mini", "Studio",
];

/// Sandbox cards with how often shoppers use them (per thousand).
const CARDS: [(&str, u32); 6] = [
    ("4242424242424242", 600), // visa, approved
    ("5555555555554444", 170), // mastercard, approved
    ("378282246310005", 110),  // amex, approved
    ("4000000000000002", 60),  // declined
    ("4000000000009995", 45),  // insufficient funds
    ("4100000000000019", 15),  // fraud
];

struct Product {
    id: String,
    price_cents: i64,
}

struct Shop {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    credentials: String,
    products: Vec<Product>,
    /// Cumulative popularity of the products (Zipf), for sampling.
    popularity: Vec<f64>,
    users: Vec<String>,
    /// Orders paid for, oldest first, to deliver or refund later.
    paid: Mutex<VecDeque<String>>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    visits: AtomicU64,
    orders: AtomicU64,
    carts_abandoned: AtomicU64,
    declined: AtomicU64,
    fraud: AtomicU64,
    cancelled: AtomicU64,
    delivered: AtomicU64,
    refunded: AtomicU64,
    restocked: AtomicU64,
    errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Runs `tidemark demo`.
pub fn run(args: DemoArgs) -> ExitCode {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) || args.products == 0 || args.users == 0 {
        eprintln!("tidemark demo: --rate must be above 0 and at most 10000, --products and --users at least 1");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tidemark demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tidemark demo: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let base = args.server.trim_end_matches('/').to_string();
    let mut shop = Shop {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: base.clone(),
        credentials: format!("Bearer {}", args.api_key.trim()),
        products: Vec::new(),
        popularity: Vec::new(),
        users: Vec::new(),
        paid: Mutex::new(VecDeque::new()),
        counts: Counts::default(),
    };
    shop.wait_until_ready().await?;
    let mut rng = SmallRng::seed_from_u64(args.seed);
    // Names unique to this run, so that a second run seeds beside the first.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let run = format!("{:x}", now.as_millis() % 0xFFFF_FFFF);
    eprintln!(
        "seeding {} products and {} shoppers on {base} ...",
        args.products, args.users
    );
    for i in 0..args.products {
        let name = format!(
            "{} {}",
            ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
            NOUNS[i % NOUNS.len()]
        );
        let price_cents = rng.random_range(5..=120) * 100 - 1;
        let body = json!({
            "sku": format!("DEMO-{run}-{i:03}"),
            "name": name,
            "price_cents": price_cents,
            "currency": "USD",
            "initial_stock": rng.random_range(80..=400),
            "reorder_point": 40,
            "warehouse_id": WAREHOUSES[i % WAREHOUSES.len()],
        });
        let (status, product) = shop
            .call(Method::POST, "/api/v1/products", Some(body))
            .await?;
        if status != StatusCode::CREATED {
            return Err(refused("creating a product", status, &product));
        }
        let id = product["id"].as_str().unwrap_or_default().to_string();
        shop.products.push(Product { id, price_cents });
    }
    let mut total = 0.0;
    for rank in 1..=shop.products.len() {
        total += 1.0 / (rank as f64).powf(ZIPF_EXPONENT);
        shop.popularity.push(total);
    }
    for i in 0..args.users {
        let body = json!({
            "email": format!("shopper{i}.{run}@demo.example"),
            "password": format!("demo-password-{run}-{i}"),
            "name": format!("Shopper {i}"),
        });
        let (status, user) = shop.call(Method::POST, "/api/v1/users", Some(body)).await?;
        if status != StatusCode::CREATED {
            return Err(refused("signing up a shopper", status, &user));
        }
        shop.users
            .push(user["id"].as_str().unwrap_or_default().to_string());
    }
    eprintln!(
        "shopping at {} visits/s; open {base}/dashboard (Ctrl-C stops)",
        args.rate
    );

    let shop = Arc::new(shop);
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let deadline = args.duration.map(|duration| started + *duration);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut visit = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        visit += 1;
        // Each visit has its own generator, from the seed and its number: the same seed
        // makes the same choices whatever order the visits finish in.
        let rng = SmallRng::seed_from_u64(args.seed ^ visit.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // A visit that finds every slot taken waits: the demo never outruns the server.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let visitor = Arc::clone(&shop);
        tokio::spawn(async move {
            visitor.visit(rng).await;
            drop(slot);
        });
        if visit.is_multiple_of(5) {
            bar.set_message(shop.counts.line(started.elapsed()));
            bar.tick();
        }
    }
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
    bar.finish_and_clear();
    // The last line stays, on a terminal or in a log.
    eprintln!("{}", shop.counts.line(started.elapsed()));
    Ok(())
}

fn refused(what: &str, status: StatusCode, body: &Value) -> String {
    let detail = body["detail"].as_str().unwrap_or_default();
    format!("{what} was refused: {status} {detail}")
}

impl Counts {
    fn line(&self, elapsed: Duration) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let orders = get(&self.orders);
        format!(
            "orders {orders} ({:.1}/s) · declined {} · fraud {} · cancelled {} · carts abandoned {} · delivered {} · refunded {} · restocked {} · errors {}",
            orders as f64 / elapsed.as_secs_f64().max(0.001),
            get(&self.declined),
            get(&self.fraud),
            get(&self.cancelled),
            get(&self.carts_abandoned),
            get(&self.delivered),
            get(&self.refunded),
            get(&self.restocked),
            get(&self.errors),
        )
    }
}

impl Shop {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, &self.credentials);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| format!("{} does not answer: {error}", self.base))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Waits while the server replays its log (`/health/ready` says 503), up to
    /// `READY_PATIENCE`.
    async fn wait_until_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_PATIENCE;
        let mut said = false;
        loop {
            let (status, readiness) = self.call(Method::GET, "/health/ready", None).await?;
            if status.is_success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(refused(
                    "waiting for the server to be ready",
                    status,
                    &readiness,
                ));
            }
            if !said {
                eprintln!("waiting for {} to finish replaying its log ...", self.base);
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Like `call`, counting what goes wrong instead of returning it.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Option<Value> {
        match self.call(method, path, body).await {
            Ok((status, body)) if status.is_success() => Some(body),
            _ => {
                bump(&self.counts.errors);
                None
            }
        }
    }

    fn product(&self, rng: &mut SmallRng) -> &Product {
        let total = *self.popularity.last().expect("products");
        let x = rng.random_range(0.0..total);
        let rank = self
            .popularity
            .partition_point(|cumulative| *cumulative <= x);
        &self.products[rank.min(self.products.len() - 1)]
    }

    fn card(rng: &mut SmallRng) -> Value {
        let mut pick = rng.random_range(0..CARDS.iter().map(|(_, weight)| weight).sum::<u32>());
        let number = CARDS
            .iter()
            .find(|(_, weight)| {
                let found = pick < *weight;
                pick = pick.saturating_sub(*weight);
                found
            })
            .map_or(CARDS[0].0, |(number, _)| number);
        json!({"type": "card", "card_number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"})
    }

    /// One shopper's visit: browse into a cart or order at once, pay, perhaps cancel;
    /// and now and then, the shop's own work (deliveries, refunds).
    async fn visit(&self, mut rng: SmallRng) {
        bump(&self.counts.visits);
        let user = &self.users[rng.random_range(0..self.users.len())];
        let lines = rng.random_range(1..=3);
        let mut items = Vec::new();
        for _ in 0..lines {
            let product = self.product(&mut rng);
            items.push(json!({"product_id": product.id, "quantity": rng.random_range(1..=3)}));
        }
        let payment_method = Self::card(&mut rng);
        let order = if rng.random_bool(0.25) {
            // Through a cart, which a quarter of shoppers abandon.
            let Some(cart) = self
                .send(
                    Method::POST,
                    "/api/v1/carts",
                    Some(json!({"user_id": user})),
                )
                .await
            else {
                return;
            };
            let cart_id = cart["id"].as_str().unwrap_or_default().to_string();
            for item in &items {
                let path = format!("/api/v1/carts/{cart_id}/items");
                if self
                    .send(Method::PUT, &path, Some(item.clone()))
                    .await
                    .is_none()
                {
                    return;
                }
            }
            if rng.random_bool(0.25) {
                bump(&self.counts.carts_abandoned);
                return;
            }
            json!({"cart_id": cart_id, "payment_method": payment_method})
        } else {
            json!({"user_id": user, "items": items, "payment_method": payment_method})
        };
        let Some(placed) = self.send(Method::POST, "/api/v1/orders", Some(order)).await else {
            return;
        };
        bump(&self.counts.orders);
        let id = placed["id"].as_str().unwrap_or_default().to_string();
        if placed["cancel_reason"] == "out_of_stock" {
            self.restock(&placed).await;
            return;
        }
        if rng.random_bool(0.04) {
            let path = format!("/api/v1/orders/{id}/cancel");
            match self.call(Method::POST, &path, Some(json!({}))).await {
                Ok((status, _)) if status.is_success() => bump(&self.counts.cancelled),
                // Its payment was declined first: already cancelled.
                Ok((StatusCode::CONFLICT, _)) => {}
                _ => bump(&self.counts.errors),
            }
            return;
        }
        let settled = format!("/api/v1/orders/{id}?wait=settled&timeout_ms=5000");
        let Some(settled) = self.send(Method::GET, &settled, None).await else {
            return;
        };
        match settled["cancel_reason"].as_str() {
            Some("payment_declined") => bump(&self.counts.declined),
            Some("fraud_suspected") => bump(&self.counts.fraud),
            _ if settled["payment_id"].is_string() => self.paid.lock().push_back(id),
            _ => {}
        }
        // The warehouse and the support desk, about every fourth visit.
        if rng.random_bool(0.25) {
            self.deliver_or_refund(&mut rng).await;
        }
    }

    /// The oldest paid order: delivered, or now and then refunded in part.
    async fn deliver_or_refund(&self, rng: &mut SmallRng) {
        let Some(order) = self.paid.lock().pop_front() else {
            return;
        };
        let Some(order) = self
            .send(Method::GET, &format!("/api/v1/orders/{order}"), None)
            .await
        else {
            return;
        };
        if rng.random_bool(0.05) {
            let payment = order["payment_id"].as_str().unwrap_or_default();
            let amount = (order["total_cents"].as_i64().unwrap_or(0) / 4).max(1);
            let path = format!("/api/v1/payments/{payment}/refund");
            let body = json!({"amount_cents": amount, "reason": "requested_by_customer"});
            if self.send(Method::POST, &path, Some(body)).await.is_some() {
                bump(&self.counts.refunded);
            }
            return;
        }
        let id = order["id"].as_str().unwrap_or_default();
        if order["status"] != "shipped" {
            if order["status"] == "confirmed" {
                // Not dispatched yet: later.
                self.paid.lock().push_back(id.to_string());
            }
            return;
        }
        if let Some(shipment) = order["shipment_id"].as_str() {
            let path = format!("/api/v1/shipments/{shipment}/deliver");
            if self
                .send(Method::POST, &path, Some(json!({})))
                .await
                .is_some()
            {
                bump(&self.counts.delivered);
            }
        }
    }

    /// An order found a product sold out: the warehouse receives more of each.
    async fn restock(&self, order: &Value) {
        let Some(items) = order["items"].as_array() else {
            return;
        };
        for item in items {
            let Some(product) = item["product_id"].as_str() else {
                continue;
            };
            let price = (self.products.iter())
                .find(|known| known.id == product)
                .map_or(0, |known| known.price_cents);
            // Cheaper products come in larger lots.
            let delta = if price < 3000 { 400 } else { 200 };
            let body = json!({"product_id": product, "delta": delta, "reason": "received"});
            if self
                .send(Method::POST, "/api/v1/inventory/adjust", Some(body))
                .await
                .is_some()
            {
                bump(&self.counts.restocked);
            }
        }
    }
}
