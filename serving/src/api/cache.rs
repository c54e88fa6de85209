//! Public catalog reads (products, search, availability) answered from memory while
//! the catalog has not changed.
//!
//! The catalog's version is the log time of its last change: of a product, of stock,
//! or of the stock forecast shown with a product (`Snapshot::catalog_version`). A body
//! is kept with the version of the snapshot it was read at and served only while the
//! newest snapshot has that same version, so a cached answer is exactly what rendering
//! it again would give: once the views' frontier passes a change, which is before the
//! change's command is acknowledged, no reader gets the old body, its writer included.
//! The version is read before the handler runs: the body may be newer than the version
//! it is kept under, never older, and versions only move forward, so it is dropped,
//! never served stale.
//!
//! The same version makes an `ETag` (weak, since compression changes the bytes), so
//! clients revalidate with `If-None-Match` and get 304 while nothing changed;
//! `Cache-Control: no-cache` tells them to ask every time. The version is a log time,
//! which a replay rebuilds, so a tag stays good across restarts.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dataflows::model::Time;
use parking_lot::Mutex;
use std::collections::HashMap;

use super::error::ApiError;
use super::App;

/// The most the cache holds, in body bytes; past it, it starts again empty.
const MAX_BYTES: usize = 32 << 20;

#[derive(Default)]
pub struct CatalogCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The catalog version every body here was read at.
    version: (Time, Time),
    bodies: HashMap<String, Bytes>,
    bytes: usize,
}

impl CatalogCache {
    fn get(&self, key: &str, version: (Time, Time)) -> Option<Bytes> {
        let entries = self.entries.lock();
        (entries.version == version)
            .then(|| entries.bodies.get(key).cloned())
            .flatten()
    }

    fn put(&self, key: String, version: (Time, Time), body: Bytes) {
        let mut entries = self.entries.lock();
        if version < entries.version {
            return;
        }
        if version > entries.version || entries.bytes + body.len() > MAX_BYTES {
            *entries = Entries {
                version,
                ..Entries::default()
            };
        }
        entries.bytes += body.len();
        if let Some(replaced) = entries.bodies.insert(key, body) {
            entries.bytes -= replaced.len();
        }
    }
}

/// The tag of the answer to `key` at catalog `version`.
fn etag(key: &str, (catalog, forecast): (Time, Time)) -> HeaderValue {
    let digest = path_digest(key);
    HeaderValue::from_str(&format!("W/\"{catalog:x}-{forecast:x}-{digest:016x}\""))
        .expect("hex digits make a valid header")
}

/// A digest of the request's path and query, to tell tags of different reads apart.
fn path_digest(key: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Whether `If-None-Match` names `tag` (weak comparison, RFC 9110 13.1.2). `*` is
/// not taken: it would answer 304 for a product that does not exist.
fn names(if_none_match: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(listed) = if_none_match.to_str() else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let wanted = opaque(tag.to_str().unwrap_or_default());
    listed
        .split(',')
        .any(|candidate| opaque(candidate) == wanted)
}

/// Middleware on the cached routes: 304 for a client that holds the current answer, the
/// kept body when there is one, else the handler's answer, kept when it is a 200.
pub async fn catalog(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(cache) = &app.catalog_cache else {
        return next.run(request).await;
    };
    let version = app.views.read().catalog_version();
    let key = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let tag = etag(&key, version);
    // The tag, the revalidation rule and where the answer came from (`x-cache`).
    let tagged = |mut response: Response, source: Option<&'static str>| {
        let headers = response.headers_mut();
        headers.insert(header::ETAG, tag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Some(source) = source {
            headers.insert(X_CACHE.clone(), HeaderValue::from_static(source));
        }
        response
    };
    if request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|held| names(held, &tag))
    {
        return tagged(StatusCode::NOT_MODIFIED.into_response(), None);
    }
    if let Some(body) = cache.get(&key, version) {
        let json = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        return tagged((json, body).into_response(), Some("hit"));
    }
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => return ApiError::internal(error).into_response(),
    };
    cache.put(key, version, body.clone());
    tagged(Response::from_parts(parts, Body::from(body)), Some("miss"))
}

static X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_served_only_at_the_version_it_was_read_at() {
        let cache = CatalogCache::default();
        cache.put("/a".into(), (5, 0), Bytes::from_static(b"five"));
        assert_eq!(cache.get("/a", (5, 0)).as_deref(), Some(&b"five"[..]));
        assert_eq!(cache.get("/a", (6, 0)), None);
        assert_eq!(cache.get("/a", (5, 1)), None);
        // A newer version empties it; a body read at an older one is not kept.
        cache.put("/b".into(), (6, 0), Bytes::from_static(b"six"));
        assert_eq!(cache.get("/a", (6, 0)), None);
        cache.put("/a".into(), (5, 0), Bytes::from_static(b"five"));
        assert_eq!(cache.get("/a", (5, 0)), None);
        assert_eq!(cache.get("/b", (6, 0)).as_deref(), Some(&b"six"[..]));
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists() {
        let tag = etag("/api/v1/products", (7, 2));
        let strong = tag.to_str().unwrap().trim_start_matches("W/").to_string();
        let listed = format!("\"x\", {}", tag.to_str().unwrap());
        for held in [tag.to_str().unwrap().to_string(), strong, listed] {
            assert!(
                names(&HeaderValue::from_str(&held).unwrap(), &tag),
                "{held}"
            );
        }
        let other = etag("/api/v1/products", (8, 2));
        assert!(!names(&other, &tag));
        assert!(!names(&etag("/api/v1/products?limit=1", (7, 2)), &tag));
    }
}
