//! OAuth 2.0 as a client library drives it: the token endpoint's grants, refresh-token
//! rotation and reuse detection, the authorization endpoint with PKCE and its failure
//! modes, client credentials for service accounts, revocation and discovery.

use axum::http::StatusCode;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::{Reply, TestApp};

const PASSWORD: &str = "correct horse battery";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";

fn form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// `POST /oauth2/token`, form-encoded, with `headers` besides.
async fn token(t: &TestApp, pairs: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    t.send_raw("POST", "/oauth2/token", Some(&form(pairs)), &all)
        .await
}

async fn password_grant(t: &TestApp, email: &str) -> Reply {
    token(
        t,
        &[
            ("grant_type", "password"),
            ("client_id", "tidemark-cli"),
            ("username", email),
            ("password", PASSWORD),
            ("scope", "openid profile"),
        ],
        &[],
    )
    .await
}

async fn refresh(t: &TestApp, refresh_token: &str) -> Reply {
    token(
        t,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "tidemark-cli"),
            ("refresh_token", refresh_token),
        ],
        &[],
    )
    .await
}

async fn read_user(t: &TestApp, user: &str, access_token: &str) -> Reply {
    t.send_raw(
        "GET",
        &format!("/api/v1/users/{user}"),
        None,
        &[("authorization", &format!("Bearer {access_token}"))],
    )
    .await
}

fn text(reply: &Reply, field: &str) -> String {
    reply.body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {:?}", reply.body))
        .to_string()
}

/// An OAuth error: the status, RFC 6749's `error`, and a problem document.
fn assert_oauth_error(reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    assert_eq!(reply.body["error"], error, "{:?}", reply.body);
    assert!(reply.body["error_description"].is_string());
    assert_eq!(reply.content_type, "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_session() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    let first = password_grant(&t, "ann@example.com").await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["token_type"], "Bearer");
    assert_eq!(first.body["scope"], "openid profile");
    assert_eq!(first.headers["cache-control"], "no-store");
    let access_1 = text(&first, "access_token");
    let refresh_1 = text(&first, "refresh_token");
    assert_eq!(read_user(&t, &user, &access_1).await.status, StatusCode::OK);

    // Each refresh answers a new access token and the next refresh token.
    let second = refresh(&t, &refresh_1).await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    let refresh_2 = text(&second, "refresh_token");
    let access_2 = text(&second, "access_token");
    assert_ne!(refresh_2, refresh_1);
    let third = refresh(&t, &refresh_2).await;
    let refresh_3 = text(&third, "refresh_token");
    let access_3 = text(&third, "access_token");
    assert_eq!(read_user(&t, &user, &access_2).await.status, StatusCode::OK);
    // Another session of the same user, which reuse elsewhere leaves alone.
    let other = password_grant(&t, "ann@example.com").await;
    let other_access = text(&other, "access_token");

    // The spent refresh_1 comes back: someone holds a copy. Refused, and the session
    // ends: its live refresh token and every access token issued in it.
    let reused = refresh(&t, &refresh_1).await;
    assert_oauth_error(&reused, 400, "invalid_grant");
    assert!(text(&reused, "detail").contains("revoked"));
    assert_oauth_error(&refresh(&t, &refresh_3).await, 400, "invalid_grant");
    for access in [&access_1, &access_2, &access_3] {
        let refused = read_user(&t, &user, access).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(refused.body["code"], "token_revoked");
    }
    assert_eq!(
        read_user(&t, &user, &other_access).await.status,
        StatusCode::OK
    );

    // A refresh token is its client's, and garbage is no refresh token.
    let stolen = text(&other, "refresh_token");
    let elsewhere = token(
        &t,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "another-app"),
            ("refresh_token", &stolen),
        ],
        &[],
    )
    .await;
    assert_oauth_error(&elsewhere, 400, "invalid_grant");
    assert_oauth_error(&refresh(&t, "tmr_nothing").await, 400, "invalid_grant");

    // Signing out with the refresh token (RFC 7009) ends that session.
    let revoked = t
        .send_raw(
            "POST",
            "/oauth2/revoke",
            Some(&form(&[
                ("token", &stolen),
                ("token_type_hint", "refresh_token"),
            ])),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(
        read_user(&t, &user, &other_access).await.body["code"],
        "token_revoked"
    );
    assert_oauth_error(&refresh(&t, &stolen).await, 400, "invalid_grant");

    // All of it is in the log: after a restart on two workers the session stays
    // revoked, and a new one works.
    let t = t.restart(2).await;
    assert_eq!(
        read_user(&t, &user, &access_3).await.body["code"],
        "token_revoked"
    );
    let again = password_grant(&t, "ann@example.com").await;
    let fresh = refresh(&t, &text(&again, "refresh_token")).await;
    assert_eq!(fresh.status, StatusCode::OK, "{:?}", fresh.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_grant_is_for_the_cli_and_checks_the_sign_in() {
    let t = TestApp::new().await;
    t.user("ann@example.com").await;
    let grant = |client: &'static str, password: &'static str| {
        let t = &t;
        async move {
            token(
                t,
                &[
                    ("grant_type", "password"),
                    ("client_id", client),
                    ("username", "ann@example.com"),
                    ("password", password),
                ],
                &[],
            )
            .await
        }
    };
    assert_oauth_error(&grant("no-such-app", PASSWORD).await, 400, "invalid_client");
    let wrong = grant("tidemark-cli", "wrong password").await;
    assert_oauth_error(&wrong, 400, "invalid_grant");
    assert_eq!(wrong.body["code"], "invalid_credentials");
    // Wrong guesses lock the account here as on /users/authenticate.
    for _ in 0..4 {
        grant("tidemark-cli", "wrong password").await;
    }
    let locked = grant("tidemark-cli", PASSWORD).await;
    assert_oauth_error(&locked, 400, "invalid_grant");
    assert_eq!(locked.body["code"], "account_locked");
    assert!(locked.headers.contains_key("retry-after"));

    for (pairs, error) in [
        (vec![("grant_type", "implicit")], "unsupported_grant_type"),
        (vec![("client_id", "tidemark-cli")], "invalid_request"),
        (
            vec![("grant_type", "password"), ("client_id", "tidemark-cli")],
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", "tidemark-cli"),
                ("username", "ann@example.com"),
                ("password", PASSWORD),
                ("scope", "admin"),
            ],
            "invalid_scope",
        ),
    ] {
        let reply = token(&t, &pairs, &[]).await;
        assert_oauth_error(&reply, 400, error);
    }
    let twice = t
        .send_raw(
            "POST",
            "/oauth2/token",
            Some("grant_type=password&grant_type=refresh_token"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_oauth_error(&twice, 400, "invalid_request");
    let as_text = t
        .send_raw(
            "POST",
            "/oauth2/token",
            Some("grant_type=password"),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(as_text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// The query of an authorization request from the CLI, with `changes` made to it.
fn authorize_query(changes: &[(&str, Option<&str>)]) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let mut pairs: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", "tidemark-cli"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email"),
        ("state", "xyz-123"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    for (name, value) in changes {
        pairs.retain(|(n, _)| n != name);
        if let Some(value) = value {
            pairs.push((name.to_string(), value.to_string()));
        }
    }
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    form(&pairs)
}

/// The query parameters of a redirect's `Location`.
fn redirected(reply: &Reply) -> Vec<(String, String)> {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{:?}", reply.body);
    let location = reply.headers["location"].to_str().unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.clone())
}

async fn redeem(t: &TestApp, code: &str, verifier: &str, redirect: &str) -> Reply {
    token(
        t,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "tidemark-cli"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ],
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_code_grant_needs_pkce_and_a_code_works_once() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    // Not signed in: the sign-in page, carrying the request along.
    let page = t
        .send_raw(
            "GET",
            &format!("/oauth2/authorize?{}", authorize_query(&[])),
            None,
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    let html = String::from_utf8(page.raw.clone()).unwrap();
    assert!(html.contains(r#"name="code_challenge""#) && html.contains("xyz-123"));
    assert_eq!(page.headers["x-frame-options"], "DENY");

    // The form, posted with a wrong password: the page again, saying so.
    let post = |password: &str| {
        let body = format!(
            "{}&{}",
            authorize_query(&[]),
            form(&[("email", "ann@example.com"), ("password", password)])
        );
        let t = &t;
        async move {
            t.send_raw(
                "POST",
                "/oauth2/authorize",
                Some(&body),
                &[("content-type", "application/x-www-form-urlencoded")],
            )
            .await
        }
    };
    let wrong = post("wrong").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8(wrong.raw.clone())
        .unwrap()
        .contains("wrong"));
    // The right one: back to the client with a code, the state and the issuer.
    let back = redirected(&post(PASSWORD).await);
    assert_eq!(param(&back, "state").as_deref(), Some("xyz-123"));
    assert_eq!(param(&back, "iss").as_deref(), Some("tidemark"));
    let code = param(&back, "code").expect("a code");

    // PKCE: the verifier must match the challenge; the redirect URI must be the same.
    let other_verifier = "x".repeat(43);
    assert_oauth_error(
        &redeem(&t, &code, &other_verifier, REDIRECT).await,
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &redeem(&t, &code, VERIFIER, "http://127.0.0.1:9/elsewhere").await,
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &redeem(&t, &code, "short", REDIRECT).await,
        400,
        "invalid_request",
    );
    let tokens = redeem(&t, &code, VERIFIER, REDIRECT).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    assert_eq!(tokens.body["scope"], "email openid");
    let access = text(&tokens, "access_token");
    assert_eq!(read_user(&t, &user, &access).await.status, StatusCode::OK);
    // With `openid`, an ID token for the client, with the request's nonce; it is not
    // an access token.
    let id_token = text(&tokens, "id_token");
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["aud"], "tidemark-cli");
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["email"], "ann@example.com");
    assert_eq!(claims["iss"], "tidemark");
    assert_eq!(
        read_user(&t, &user, &id_token).await.body["code"],
        "invalid_token"
    );
    let userinfo = t
        .send_raw(
            "GET",
            "/oauth2/userinfo",
            None,
            &[("authorization", &format!("Bearer {access}"))],
        )
        .await;
    assert_eq!(userinfo.body["sub"], user.as_str());
    let refreshed = refresh(&t, &text(&tokens, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);

    // The code a second time: someone else has it. Refused, and the session it opened
    // is revoked, tokens and all.
    assert_oauth_error(
        &redeem(&t, &code, VERIFIER, REDIRECT).await,
        400,
        "invalid_grant",
    );
    assert_eq!(
        read_user(&t, &user, &text(&refreshed, "access_token"))
            .await
            .body["code"],
        "token_revoked"
    );
    assert_oauth_error(
        &refresh(&t, &text(&refreshed, "refresh_token")).await,
        400,
        "invalid_grant",
    );

    // A signed-in user (a bearer token) is sent back at once.
    let (signed_in, _) = t
        .app
        .auth
        .tokens
        .issue(&user, &[], serving::auth::tokens::unix_seconds());
    let at_once = t
        .send_raw(
            "GET",
            &format!("/oauth2/authorize?{}", authorize_query(&[])),
            None,
            &[("authorization", &format!("Bearer {signed_in}"))],
        )
        .await;
    let code = param(&redirected(&at_once), "code").expect("a code");
    assert_eq!(
        redeem(&t, &code, VERIFIER, REDIRECT).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_without_pkce_or_a_registered_redirect_are_refused() {
    let t = TestApp::new().await;
    let get = |changes: Vec<(&'static str, Option<&'static str>)>| {
        let t = &t;
        async move {
            t.send_raw(
                "GET",
                &format!("/oauth2/authorize?{}", authorize_query(&changes)),
                None,
                &[],
            )
            .await
        }
    };
    // Never redirected: an unknown client, or a redirect URI it did not register.
    for changes in [
        vec![("client_id", Some("no-such-app"))],
        vec![("redirect_uri", Some("https://evil.example/callback"))],
        vec![("redirect_uri", None)],
    ] {
        let reply = get(changes.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{changes:?}");
        assert!(!reply.headers.contains_key("location"));
        assert_eq!(reply.content_type, "application/problem+json");
    }
    // Sent back to the client with the error and the state.
    for (changes, error) in [
        (vec![("code_challenge", None)], "invalid_request"),
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (vec![("code_challenge_method", None)], "invalid_request"),
        (
            vec![("code_challenge", Some("too-short"))],
            "invalid_request",
        ),
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (vec![("scope", Some("admin"))], "invalid_scope"),
    ] {
        let back = redirected(&get(changes.clone()).await);
        assert_eq!(param(&back, "error").as_deref(), Some(error), "{changes:?}");
        assert_eq!(param(&back, "state").as_deref(), Some("xyz-123"));
        assert!(param(&back, "code").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_get_tokens_by_client_credentials_that_end_with_their_key() {
    let t = TestApp::new().await;
    let created = t
        .post(
            "/api/v1/api-keys",
            json!({"name": "orders", "service_account": "order_service"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    // The brief's permission set for the order service.
    assert_eq!(
        created.body["scopes"],
        json!(["inventory:read", "notification:publish", "payment:write"])
    );
    for body in [
        json!({"name": "x", "service_account": "no_such_service"}),
        json!({"name": "x", "service_account": "order_service", "scopes": ["admin"]}),
    ] {
        let refused = t.post("/api/v1/api-keys", body).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.body["errors"][0]["field"], "service_account");
    }
    let key_id = text(&created, "id");
    let key = text(&created, "key");
    let basic = format!("Basic {}", STANDARD.encode(format!("{key_id}:{key}")));
    let by_basic = token(
        &t,
        &[("grant_type", "client_credentials")],
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(by_basic.status, StatusCode::OK, "{:?}", by_basic.body);
    assert_eq!(
        by_basic.body["scope"],
        "inventory:read notification:publish payment:write"
    );
    assert!(by_basic.body.get("refresh_token").is_none());
    let narrowed = token(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &key_id),
            ("client_secret", &key),
            ("scope", "inventory:read"),
        ],
        &[],
    )
    .await;
    assert_eq!(narrowed.body["scope"], "inventory:read");
    let service_token = text(&by_basic, "access_token");
    let narrow_token = text(&narrowed, "access_token");

    // The token acts with the key's scopes, or the narrowed ones.
    let read = |token: String| {
        let t = &t;
        async move {
            t.send_raw(
                "GET",
                "/api/v1/inventory/reservations/res-none",
                None,
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
        }
    };
    assert_eq!(
        read(service_token.clone()).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        read(narrow_token.clone()).await.status,
        StatusCode::NOT_FOUND
    );
    let refund = t
        .send_raw(
            "POST",
            "/api/v1/payments/pay_none/refund",
            Some("{}"),
            &[("authorization", &format!("Bearer {narrow_token}"))],
        )
        .await;
    assert_eq!(refund.status, StatusCode::FORBIDDEN);

    // Wrong secrets, and keys that are not a service's, are invalid clients.
    let wrong = token(
        &t,
        &[("grant_type", "client_credentials")],
        &[(
            "authorization",
            &format!("Basic {}", STANDARD.encode(format!("{key_id}:tmk_wrong"))),
        )],
    )
    .await;
    assert_oauth_error(&wrong, 401, "invalid_client");
    assert!(wrong.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let user = t.user("ann@example.com").await;
    let owned = t
        .post(
            "/api/v1/api-keys",
            json!({"name": "ann's", "owner_id": user}),
        )
        .await;
    let as_user = token(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &text(&owned, "id")),
            ("client_secret", &text(&owned, "key")),
        ],
        &[],
    )
    .await;
    assert_oauth_error(&as_user, 400, "invalid_client");
    let too_wide = token(
        &t,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &key_id),
            ("client_secret", &key),
            ("scope", "admin"),
        ],
        &[],
    )
    .await;
    assert_oauth_error(&too_wide, 400, "invalid_scope");

    // Revoking the key ends its tokens.
    let revoked = t
        .send("DELETE", &format!("/api/v1/api-keys/{key_id}"), None, &[])
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let refused = read(service_token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["code"], "key_revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_every_endpoint_and_what_they_take() {
    let t = TestApp::new().await;
    let document = t
        .send_raw(
            "GET",
            "/.well-known/openid-configuration",
            None,
            &[("host", "shop.example:8080")],
        )
        .await;
    assert_eq!(document.status, StatusCode::OK);
    let d = &document.body;
    assert_eq!(d["issuer"], "tidemark");
    assert_eq!(d["token_endpoint"], "http://shop.example:8080/oauth2/token");
    assert_eq!(
        d["authorization_endpoint"],
        "http://shop.example:8080/oauth2/authorize"
    );
    assert_eq!(
        d["jwks_uri"],
        "http://shop.example:8080/.well-known/jwks.json"
    );
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    for grant in [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "password",
    ] {
        assert!(d["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(grant)));
    }
    // The keys it points to verify the tokens the token endpoint signs.
    let jwks = t.send_raw("GET", "/.well-known/jwks.json", None, &[]).await;
    assert!(!jwks.body["keys"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_their_sessions_and_signs_one_out() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    t.user("bob@example.com").await;
    let laptop = password_grant(&t, "ann@example.com").await;
    let phone = password_grant(&t, "ann@example.com").await;
    let bob = password_grant(&t, "bob@example.com").await;
    let as_ann = format!("Bearer {}", text(&laptop, "access_token"));
    let path = format!("/api/v1/users/{user}/sessions");
    let listed = t
        .send_raw("GET", &path, None, &[("authorization", &as_ann)])
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|item| item["status"] == "active"
        && item["client_id"] == "tidemark-cli"
        && item["grant"] == "password"));
    assert!(!listed.raw.windows(4).any(|w| w == b"tmr_"), "no secrets");
    // Paged by id.
    let first = t.get(&format!("{path}?limit=1")).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
    let second = t.get(&format!("{path}?limit=1&cursor={cursor}")).await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert_ne!(second.body["items"][0]["id"], first.body["items"][0]["id"]);

    // Bob sees none of it; signing out the phone leaves the laptop signed in.
    let as_bob = format!("Bearer {}", text(&bob, "access_token"));
    let peek = t
        .send_raw("GET", &path, None, &[("authorization", &as_bob)])
        .await;
    assert_eq!(peek.status, StatusCode::FORBIDDEN);
    let phone_access = text(&phone, "access_token");
    let phone_id = items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .find(|id| session_of_token(&phone_access) == *id)
        .expect("the phone's session is listed");
    let ended = t
        .send_raw(
            "DELETE",
            &format!("{path}/{phone_id}"),
            None,
            &[("authorization", &as_ann)],
        )
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    assert_eq!(
        read_user(&t, &user, &phone_access).await.body["code"],
        "token_revoked"
    );
    assert_oauth_error(
        &refresh(&t, &text(&phone, "refresh_token")).await,
        400,
        "invalid_grant",
    );
    let still = t
        .send_raw("GET", &path, None, &[("authorization", &as_ann)])
        .await;
    assert_eq!(still.status, StatusCode::OK);
    let revoked = still.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == phone_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoke_reason"], "revoked");
    // Again is fine; another user's session or none at all is not found.
    let again = t
        .send("DELETE", &format!("{path}/{phone_id}"), None, &[])
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    let missing = t
        .send("DELETE", &format!("{path}/ses_nope"), None, &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// The session an access token was issued in (`sid`).
fn session_of_token(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().to_string()
}
