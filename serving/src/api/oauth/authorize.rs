//! `GET|POST /oauth2/authorize` (RFC 6749 4.1, RFC 7636): where a user lets a client
//! in. The request names a registered client and one of its redirect URIs, and carries
//! a PKCE challenge (S256 only; `plain` is refused). A user who is signed in (an access
//! token in `Authorization`) is sent straight back with a code; anyone else gets a
//! sign-in page, whose form posts back here with the same parameters, and is sent back
//! with a code once the password (and one-time code) is right. The code is good once,
//! for `auth.authorization_code_ttl_s`, at the token endpoint.
//!
//! An unknown client or redirect URI is answered here (400), never by a redirect, so
//! that the endpoint cannot send users to a place the client did not register; every
//! later error goes back to the client as `error=...&state=...` (RFC 6749 4.1.2.1).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use dataflows::model::{Command as DomainCommand, Str};
use url::Url;

use super::token::user_scope;
use super::{invalid_request, secret_digest, session_secret, Params, CODE_PREFIX};
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::Client;
use crate::api::users::sign_in;
use crate::api::{new_id, run, App};
use crate::auth::clients::Client as OAuthClient;
use crate::auth::{Caller, Principal};

/// The parameters of an authorization request, checked.
struct Request<'a> {
    client: &'a OAuthClient,
    redirect_uri: Url,
    state: Option<&'a str>,
    scope: String,
    challenge: &'a str,
    nonce: Option<&'a str>,
}

pub async fn authorize(
    State(app): State<App>,
    client: Client,
    Caller(caller): Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match Params::parse(&headers, &body, uri.query()) {
        Ok(params) => params,
        Err(error) => return error.into_response(),
    };
    let (registered_client, redirect_uri) = match registered(&app, &params) {
        Ok(registered) => registered,
        Err(error) => return error.into_response(),
    };
    let request = match checked(registered_client, &params, redirect_uri.clone()) {
        Ok(request) => request,
        Err((error, description)) => {
            return back(
                &redirect_uri,
                &[("error", error), ("error_description", &description)],
                params.get("state"),
                &app,
            )
        }
    };
    let user_id = match caller {
        Principal::User { user_id } => user_id,
        _ if method == Method::POST && params.get("password").is_some() => {
            let email = params.get("email").or(params.get("username")).unwrap_or("");
            let password = params.get("password").unwrap_or("").to_string();
            let mfa_code = params.get("mfa_code").map(str::to_string);
            match sign_in(&app, &client, email, password, mfa_code).await {
                Ok(user_id) => user_id,
                Err(error) => {
                    let status = match error.status {
                        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                        status => status,
                    };
                    return page(status, &request, &params, Some(&error.detail));
                }
            }
        }
        _ => return page(StatusCode::OK, &request, &params, None),
    };
    match grant(&app, &request, &user_id).await {
        Ok(code) => back(
            &request.redirect_uri,
            &[("code", &code)],
            request.state,
            &app,
        ),
        Err(error) => error.into_response(),
    }
}

/// The client and redirect URI, which must be registered together before anything is
/// sent to the URI.
fn registered<'a>(app: &'a App, params: &Params) -> ApiResult<(&'a OAuthClient, Url)> {
    let client_id = params.require("client_id")?;
    let client = app.auth.clients.get(client_id).ok_or_else(|| {
        ApiError::bad_request("invalid_client", "the client is not registered")
            .oauth("invalid_client")
    })?;
    let redirect_uri = params.require("redirect_uri")?;
    Url::parse(redirect_uri)
        .ok()
        .filter(|uri| client.redirects_to(uri))
        .map(|uri| (client, uri))
        .ok_or_else(|| invalid_request("redirect_uri is not one this client registered"))
}

/// The rest of the request, or the error to send back to the client.
fn checked<'a>(
    client: &'a OAuthClient,
    params: &'a Params,
    redirect_uri: Url,
) -> Result<Request<'a>, (&'static str, String)> {
    let refused = |error: &'static str, description: &str| Err((error, description.to_string()));
    if params.get("response_type") != Some("code") {
        return refused(
            "unsupported_response_type",
            "response_type must be code (the authorization code grant)",
        );
    }
    let Some(challenge) = params.get("code_challenge") else {
        return refused(
            "invalid_request",
            "PKCE is required: send code_challenge and code_challenge_method=S256",
        );
    };
    if params.get("code_challenge_method") != Some("S256") {
        return refused(
            "invalid_request",
            "code_challenge_method must be S256; plain is not accepted",
        );
    }
    // BASE64URL of a SHA-256 digest: 43 characters.
    let shaped = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !shaped {
        return refused(
            "invalid_request",
            "code_challenge must be BASE64URL(SHA-256(code_verifier)), 43 characters",
        );
    }
    let scope = user_scope(params.get("scope")).map_err(|error| ("invalid_scope", error.detail))?;
    let nonce = params.get("nonce");
    if nonce.is_some_and(|nonce| nonce.len() > 512) {
        return refused("invalid_request", "nonce is longer than 512 bytes");
    }
    Ok(Request {
        client,
        redirect_uri,
        state: params.get("state"),
        scope,
        challenge,
        nonce,
    })
}

/// Logs the code for the user's new session, and answers the code.
async fn grant(app: &App, request: &Request<'_>, user_id: &Str) -> ApiResult<String> {
    let session_id = new_id("ses", &None);
    let code = session_secret(CODE_PREFIX, &session_id);
    run(
        app,
        None,
        DomainCommand::GrantAuthorizationCode {
            session_id: session_id.into(),
            user_id: user_id.clone(),
            client_id: request.client.client_id.as_str().into(),
            scope: request.scope.clone().into(),
            code_hash: secret_digest(&code).into(),
            redirect_uri: request.redirect_uri.as_str().into(),
            code_challenge: request.challenge.into(),
            code_ttl_ms: app.config.auth.authorization_code_ttl_s * 1000,
            nonce: request.nonce.map(Str::from),
        },
    )
    .await?;
    Ok(code)
}

/// 303 to the client's redirect URI with `pairs`, the request's `state` and the issuer
/// (RFC 9207), added to the URI's own query.
fn back(redirect_uri: &Url, pairs: &[(&str, &str)], state: Option<&str>, app: &App) -> Response {
    let mut target = redirect_uri.clone();
    {
        let mut query = target.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", app.auth.tokens.issuer());
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(target.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The sign-in page: the request's parameters ride along in hidden fields.
fn page(
    status: StatusCode,
    request: &Request<'_>,
    params: &Params,
    error: Option<&str>,
) -> Response {
    let hidden: String = [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "nonce",
    ]
    .iter()
    .filter_map(|name| {
        params.get(name).map(|value| {
            format!(
                r#"<input type="hidden" name="{name}" value="{}">"#,
                escape(value)
            )
        })
    })
    .collect();
    let error = error.map_or_else(String::new, |detail| {
        format!(r#"<p class="error" role="alert">{}</p>"#, escape(detail))
    });
    let email = params.get("email").or(params.get("username")).unwrap_or("");
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Sign in to {client}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}}
label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.4rem;box-sizing:border-box}}
button{{margin-top:1rem;padding:.5rem 1rem}}.error{{color:#a00}}</style></head>
<body><h1>Sign in</h1><p><strong>{client}</strong> asks to act for you{scope}.</p>{error}
<form method="post" action="/oauth2/authorize">{hidden}
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required value="{email}">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="mfa_code">One-time code (if your account has one)</label><input id="mfa_code" name="mfa_code" inputmode="numeric" autocomplete="one-time-code">
<button type="submit">Sign in</button></form></body></html>"#,
        client = escape(&request.client.name),
        scope = match request.scope.is_empty() {
            true => String::new(),
            false => format!(" ({})", escape(&request.scope)),
        },
        email = escape(email),
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

/// Text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}
