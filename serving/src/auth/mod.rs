//! Authentication and authorisation at the HTTP layer: who is calling (an API key or an
//! access token, `principal`), what each route needs (`policy`), and the layer that
//! applies both before a handler runs. Keys are state in the dataflow (`dataflows::auth`);
//! tokens are signed here (`tokens`).

pub mod clients;
pub mod mfa;
pub mod policy;
pub mod principal;
pub mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dataflows::model::{IdempotencyKey, Str};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::api::extract::Client;
use crate::api::App;
use crate::config::AuthConfig;
pub use policy::Rule;
pub use principal::{unauthenticated, Caller, Principal, ADMIN};
use tokens::{TokenError, Tokens};

/// What the authentication layer needs: the bootstrap key's digest and the token keys.
pub struct Authenticator {
    enabled: bool,
    bootstrap: Option<[u8; 32]>,
    /// What keys issued under an `Idempotency-Key` are derived with.
    key_secret: [u8; 32],
    pub tokens: Tokens,
    pub mfa: mfa::Mfa,
    pub clients: clients::Clients,
}

/// The prefix of every API key tidemark issues (`tmk_` and 64 hex digits).
pub const KEY_PREFIX: &str = "tmk_";

impl Authenticator {
    pub fn open(config: &AuthConfig, data_dir: &std::path::Path) -> std::io::Result<Self> {
        Ok(Authenticator {
            enabled: config.enabled,
            bootstrap: config
                .bootstrap_admin_key
                .as_ref()
                .map(|key| digest(key.expose())),
            key_secret: tokens::private_secret(&data_dir.join("keys").join("api-keys.secret"))?,
            tokens: {
                let mut tokens = Tokens::open(data_dir, &config.issuer, config.access_token_ttl_s)?;
                tokens.maintain(
                    data_dir,
                    tokens::unix_seconds(),
                    config.signing_key_rotation_days * 86_400,
                )?;
                tokens
            },
            mfa: mfa::Mfa::open(&data_dir.join("keys").join("mfa.secret"), &config.issuer)?,
            clients: clients::Clients::new(&config.clients)
                .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?,
        })
    }

    /// The claims of an unexpired access token signed by this server or by a key
    /// another server sharing the log published (and has not retired).
    pub fn verify_token(&self, app: &App, token: &str) -> Result<tokens::Claims, TokenError> {
        self.tokens.verify(token, |kid| {
            let snapshot = app.views.read();
            let key = snapshot.signing_keys.get(kid)?;
            key.retired_at.is_none().then(|| key.public_key.to_string())
        })
    }

    /// The public keys of every server sharing the log (RFC 7517).
    pub fn jwks(&self, app: &App) -> jsonwebtoken::jwk::JwkSet {
        let snapshot = app.views.read();
        let published = (snapshot.signing_keys.values())
            .filter(|key| key.retired_at.is_none())
            .map(|key| (&*key.kid, &*key.public_key));
        self.tokens.jwks_with(published)
    }

    /// Publishes this server's signing keys through the log, so that every server
    /// sharing it accepts the tokens they sign, and retires the keys it deleted. At
    /// start-up, once the views have caught up with the log.
    pub async fn publish_signing_keys(app: &crate::runtime::Tidemark) -> Result<(), ApiError> {
        use dataflows::model::Command::{PublishSigningKey, RetireSigningKey};
        // Done already (by an earlier start), or retiring a key never published.
        let done = |result: Result<_, ApiError>| match result {
            Err(error)
                if matches!(
                    error.code.as_str(),
                    "signing_key_published" | "signing_key_retired" | "not_found"
                ) =>
            {
                Ok(())
            }
            other => other.map(drop),
        };
        let unpublished: Vec<(Str, Str)> = {
            let snapshot = app.views.read();
            (app.auth.tokens.public_keys())
                .filter(|(kid, _)| !snapshot.signing_keys.contains_key(kid))
                .map(|(kid, x)| (kid.into(), x.into()))
                .collect()
        };
        for (kid, public_key) in unpublished {
            let command = PublishSigningKey { kid, public_key };
            done(crate::api::run(app, None, command).await)?;
        }
        for kid in app.auth.tokens.retired() {
            let command = RetireSigningKey {
                kid: kid.as_str().into(),
            };
            done(crate::api::run(app, None, command).await)?;
            tokens::forget_retired(&app.config.data_dir, kid)
                .map_err(|error| ApiError::internal(error.to_string()))?;
        }
        Ok(())
    }

    /// A new API key: 256 random bits, or, for a request with an `Idempotency-Key`, an
    /// HMAC of it under this server's secret, so that a retried request is answered
    /// with the same key while the log never holds anything a key can be found from.
    pub fn new_key(&self, idempotency: &Option<IdempotencyKey>) -> String {
        let bytes: [u8; 32] = match idempotency {
            None => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).expect("the OS random source works");
                bytes
            }
            Some(key) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(&self.key_secret)
                    .expect("HMAC takes a key of any length");
                mac.update(b"api-key\0");
                mac.update(key.key.as_bytes());
                mac.update(b"\0");
                mac.update(key.fingerprint.as_bytes());
                mac.finalize().into_bytes().into()
            }
        };
        format!("{KEY_PREFIX}{}", hex::encode(bytes))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller a request's credentials name, or 401 for credentials that are not
    /// valid (unknown, expired, revoked, malformed): credentials are checked wherever
    /// they are sent, public routes included.
    pub fn principal(&self, app: &App, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let api_key = headers.get("x-api-key");
        let authorization = headers.get(header::AUTHORIZATION);
        let credential = match (authorization, api_key) {
            (None, None) => return Ok(Principal::Anonymous),
            // The same key in both (as clients that fill every scheme send it) is one
            // credential; two different ones are ambiguous.
            (Some(value), Some(key))
                if value
                    .to_str()
                    .ok()
                    .and_then(|value| value.split_once(' '))
                    .is_some_and(|(scheme, token)| {
                        scheme.eq_ignore_ascii_case("bearer")
                            && token.trim().as_bytes() == key.as_bytes()
                    }) =>
            {
                Credential::bearer(key.to_str().unwrap_or(""))
            }
            (Some(_), Some(_)) => {
                return Err(unauthenticated(
                    "ambiguous_credentials",
                    "send either `Authorization` or `X-API-Key`, not both, unless they hold the same key",
                ))
            }
            (None, Some(key)) => Credential::Key(key.to_str().unwrap_or("")),
            (Some(value), None) => {
                let value = value.to_str().unwrap_or("");
                let Some((scheme, token)) = value.split_once(' ') else {
                    return Err(malformed());
                };
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(unauthenticated(
                        "unsupported_credentials",
                        "use `Authorization: Bearer <access token or API key>`",
                    ));
                }
                Credential::bearer(token.trim())
            }
        };
        self.credential_principal(app, credential)
    }

    /// The caller an API key names, if the key is live: how the client-credentials
    /// grant checks a service account's secret.
    pub fn service_account(&self, app: &App, key: &str) -> Option<Principal> {
        self.key_principal(app, key).ok()
    }

    /// The SQL port's check: its password is an API key or an access token whose
    /// caller may run SQL (`analytics:read`), as on `POST /api/v1/sql`.
    pub fn sql_login(&self, app: &App, password: &str) -> Result<(), String> {
        self.credential_principal(app, Credential::bearer(password))
            .and_then(|principal| principal.require("analytics:read"))
            .map_err(|error| error.detail)
    }

    fn credential_principal(
        &self,
        app: &App,
        credential: Credential<'_>,
    ) -> Result<Principal, ApiError> {
        match credential {
            Credential::Key(key) => self.key_principal(app, key),
            Credential::Token(token) => match self.verify_token(app, token) {
                Ok(claims) => self.token_principal(app, claims),
                Err(TokenError::Expired) => Err(unauthenticated(
                    "token_expired",
                    "the access token has expired; get a new one",
                )),
                Err(TokenError::Invalid(_)) => Err(unauthenticated(
                    "invalid_token",
                    "the access token is not valid here",
                )),
            },
        }
    }

    /// Who a signed, unexpired access token acts for, unless it was revoked: by
    /// itself, with its session, or with its service account's key.
    fn token_principal(&self, app: &App, claims: tokens::Claims) -> Result<Principal, ApiError> {
        let revoked = || {
            unauthenticated(
                "token_revoked",
                "the access token has been revoked; sign in again",
            )
        };
        if claims.is_service() {
            // A service account's token lives no longer than its key.
            return match self.key_row_principal(app, &claims.sub, None)? {
                Principal::Key {
                    key_id,
                    owner: None,
                    scopes,
                } => Ok(Principal::Key {
                    scopes: scopes
                        .into_iter()
                        .filter(|scope| claims.scope.split(' ').any(|s| s == &**scope))
                        .collect(),
                    key_id,
                    owner: None,
                }),
                _ => Err(unauthenticated(
                    "invalid_token",
                    "the access token is not valid here",
                )),
            };
        }
        let snapshot = app.views.read();
        if snapshot.revoked_tokens.contains_key(&claims.jti) {
            return Err(revoked());
        }
        if let Some(sid) = &claims.sid {
            if snapshot
                .sessions
                .get(sid)
                .is_none_or(|session| session.is_revoked())
            {
                return Err(revoked());
            }
        }
        // Deleting a user ends their sessions: their tokens are still signed, but name
        // no one.
        if !snapshot.users.contains_key(&claims.sub) {
            return Err(unauthenticated(
                "invalid_token",
                "the user this access token was issued to no longer exists",
            ));
        }
        Ok(Principal::User {
            user_id: claims.sub.into(),
        })
    }

    fn key_principal(&self, app: &App, key: &str) -> Result<Principal, ApiError> {
        if key.is_empty() || key.len() > 512 {
            return Err(malformed());
        }
        let hash = digest(key);
        if self.bootstrap == Some(hash) {
            return Ok(Principal::Bootstrap);
        }
        self.key_row_principal(app, "", Some(&hex::encode(hash)))
    }

    /// The caller a key names, by its digest or (with `hash` none) by its id, if the
    /// key is live and its owner exists.
    fn key_row_principal(
        &self,
        app: &App,
        key_id: &str,
        hash: Option<&str>,
    ) -> Result<Principal, ApiError> {
        let snapshot = app.views.read();
        let found = match hash {
            Some(hash) => snapshot.api_key_by_hash(hash),
            None => snapshot.api_keys.get(key_id),
        };
        let Some(row) = found else {
            return Err(unauthenticated(
                "invalid_credentials",
                "the API key is not valid",
            ));
        };
        if row.revoked_at.is_some() {
            return Err(unauthenticated(
                "key_revoked",
                "the API key has been revoked",
            ));
        }
        if !row.is_live(now_ms()) {
            return Err(unauthenticated("key_expired", "the API key has expired"));
        }
        // A user's key ends with the user.
        if row
            .owner
            .as_ref()
            .is_some_and(|owner| !snapshot.users.contains_key(owner))
        {
            return Err(unauthenticated(
                "invalid_credentials",
                "the user this API key acts for no longer exists",
            ));
        }
        Ok(Principal::Key {
            key_id: row.key_id.clone(),
            owner: row.owner.clone(),
            scopes: row.scopes.clone(),
        })
    }
}

enum Credential<'a> {
    Key(&'a str),
    Token(&'a str),
}

impl<'a> Credential<'a> {
    /// What a bearer credential is: a key (`tmk_...`, or anything that is not three
    /// dot-separated parts) or an access token (a JWT).
    fn bearer(value: &'a str) -> Credential<'a> {
        if value.starts_with(KEY_PREFIX) || value.matches('.').count() != 2 {
            Credential::Key(value)
        } else {
            Credential::Token(value)
        }
    }
}

fn malformed() -> ApiError {
    unauthenticated(
        "invalid_credentials",
        "the credentials are malformed: `Authorization: Bearer <token or key>` or `X-API-Key: <key>`",
    )
}

/// SHA-256 of a key: what the log and the views keep instead of the key. Keys are 256
/// random bits, so a fast digest is as safe as a slow one and costs microseconds.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Unix milliseconds now: what key expiries (log time) are compared with.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The layer in front of every `/api/v1` route: finds the caller, takes the request
/// from the caller's rate limit, applies the route's rule, and hands the caller to the
/// handler. With `auth.enabled = false` every caller is an administrator (benchmarks,
/// a trusted network). Requests with bad credentials count against the client
/// address's public limit, so guessing keys is limited too.
pub async fn authenticate(State(app): State<App>, request: Request, next: Next) -> Response {
    let mut found = match app.auth.enabled() {
        // The token endpoint's HTTP Basic credentials are a client's, which the
        // client-credentials grant checks; the request itself is anonymous.
        true if basic_at_token_endpoint(&request) => Ok(Principal::Anonymous),
        true => app.auth.principal(&app, request.headers()),
        false => Ok(Principal::Bootstrap),
    };
    // Credentials another server sharing the log issued a moment ago (a token of a
    // session it opened, a key it created or signed with) may not have reached this
    // server's views yet: once they have read as far as the log went, ask again.
    if found.as_ref().is_err_and(|error| {
        matches!(
            error.code.as_str(),
            "invalid_token" | "token_revoked" | "invalid_credentials"
        )
    }) && app.catch_up_with_log().await.unwrap_or(false)
    {
        found = app.auth.principal(&app, request.headers());
    }
    let client = Client::of(request.extensions());
    let allowance = match &app.rate_limits {
        None => None,
        Some(limits) => {
            let anonymous = Principal::Anonymous;
            let limited = found.as_ref().unwrap_or(&anonymous);
            let member = limited.user_id().is_some_and(|user| {
                app.views.read().tier_of(user) == dataflows::users::loyalty::Tier::Premium
            });
            match limits.bucket(limited, client, member) {
                None => None,
                Some((tier, bucket)) => match limits.check(tier, &bucket) {
                    Ok(allowance) => Some(allowance),
                    Err(refused) => {
                        let (error, allowance) = *refused;
                        let mut response = error.into_response();
                        allowance.write(&mut response);
                        return response;
                    }
                },
            }
        }
    };
    let mut response = match found {
        Ok(principal) => authorize(principal, request, next).await,
        Err(error) => challenged(error),
    };
    if let Some(allowance) = allowance {
        allowance.write(&mut response);
    }
    response
}

fn basic_at_token_endpoint(request: &Request) -> bool {
    request.uri().path() == "/oauth2/token"
        && request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
}

/// Applies the route's rule to `principal` and runs the handler.
async fn authorize(principal: Principal, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().trim_start_matches("/api/v1").to_string())
        .unwrap_or_default();
    let allowed = match policy::rule(request.method(), &path) {
        Rule::Public => Ok(()),
        Rule::SignedIn => principal.require_signed_in(),
        Rule::Scope(scope) => principal.require(scope),
    };
    if let Err(error) = allowed {
        return challenged(error);
    }
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    principal::challenge(&mut response);
    response
}

fn challenged(error: ApiError) -> Response {
    let mut response = error.into_response();
    principal::challenge(&mut response);
    response
}
