//! Access tokens: JWTs signed with Ed25519 (EdDSA), each naming its signing key (`kid`).
//!
//! Signing keys live in `<data_dir>/keys/signing/`, one file per key holding its
//! 32-byte seed in hex, readable by the owner only (0600), never logged. The newest key
//! signs; every key in the folder verifies, so a new key can be added (rotation) and an
//! old one removed once its tokens have expired. `/.well-known/jwks.json` publishes the
//! public halves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// PKCS#8 v1 of an Ed25519 key without its public half: this prefix, then the seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The audience every tidemark access token is for.
pub const AUDIENCE: &str = "tidemark";

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user.
    pub sub: String,
    pub aud: String,
    /// Unix seconds.
    pub iat: u64,
    pub exp: u64,
    /// The token's id, for revocation.
    pub jti: String,
    /// Space-separated scopes; empty for a customer's token.
    #[serde(default)]
    pub scope: String,
    /// The OAuth session the token was issued in: revoking the session revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The OAuth client the token was issued to (RFC 9068); for the client-credentials
    /// grant, the service account's key id, which is then also `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Claims {
    /// Whether the token is a service account's (client credentials), not a user's.
    pub fn is_service(&self) -> bool {
        self.client_id.as_deref() == Some(self.sub.as_str())
    }
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

/// Issues and checks access tokens.
pub struct Tokens {
    issuer: String,
    /// Oldest first; the last one signs.
    keys: Vec<SigningKey>,
    lifetime_s: u64,
    /// Tokens whose signature was checked, by the SHA-256 of the token: a client sends
    /// the same token with every request, and an Ed25519 verification costs tens of
    /// microseconds, a digest and a lookup one. Expiry is checked on every use; the
    /// revocation checks come after, on every request. Bounded: emptied when full.
    verified: parking_lot::Mutex<HashMap<[u8; 32], Claims>>,
    /// Keys deleted here, by id (`maintain`).
    retired: Vec<String>,
}

/// Tokens remembered as verified, at most.
const VERIFIED_CAPACITY: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

impl Tokens {
    /// Loads the signing keys under `data_dir`, making the first one if there is none.
    pub fn open(data_dir: &Path, issuer: &str, lifetime_s: u64) -> std::io::Result<Tokens> {
        let dir = data_dir.join("keys").join("signing");
        create_private_dir(&dir)?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        names.sort();
        let stem = |path: &Path| {
            (path.file_stem())
                .and_then(|stem| stem.to_str())
                .unwrap_or_default()
                .to_string()
        };
        let retired = (names.iter())
            .filter(|path| path.extension().is_some_and(|ext| ext == "retired"))
            .map(|path| stem(path))
            .collect();
        names.retain(|path| path.extension().is_some_and(|ext| ext == "ed25519"));
        let mut keys = Vec::new();
        for path in &names {
            let text = std::fs::read_to_string(path)?;
            let seed = hex::decode(text.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a signing key", path.display()),
                    )
                })?;
            keys.push(SigningKey::from_seed(&seed, stem(path))?);
        }
        let mut tokens = Tokens {
            issuer: issuer.to_string(),
            keys,
            lifetime_s,
            verified: parking_lot::Mutex::new(HashMap::new()),
            retired,
        };
        if tokens.keys.is_empty() {
            tokens.rotate(data_dir)?;
        }
        Ok(tokens)
    }

    /// Makes a new signing key, which signs from now on; the older ones still verify.
    pub fn rotate(&mut self, data_dir: &Path) -> std::io::Result<()> {
        self.rotate_at(data_dir, unix_seconds())
    }

    /// The newest key's id: the key that signs.
    pub fn signing_kid(&self) -> &str {
        &self
            .keys
            .last()
            .expect("a signing key exists once open")
            .kid
    }

    /// Keeps the keys fresh at `now` (Unix seconds): a new key when the one signing is
    /// `rotate_after_s` old (0: never), and the older keys deleted once every token
    /// they signed has expired (a token lifetime, and a minute of clock difference,
    /// after the next key took over). Keys whose names do not say when they were made
    /// (put there by hand) are kept.
    ///
    /// A deleted key leaves a marker (`<kid>.retired`) until the log has retired it
    /// (`retired`, `forget_retired`).
    pub fn maintain(
        &mut self,
        data_dir: &Path,
        now: u64,
        rotate_after_s: u64,
    ) -> std::io::Result<()> {
        let newest = self.keys.last().and_then(|key| created_s(&key.kid));
        if rotate_after_s > 0 && newest.is_some_and(|at| now >= at.saturating_add(rotate_after_s)) {
            self.rotate_at(data_dir, now)?;
        }
        let dir = data_dir.join("keys").join("signing");
        let expired_before = now.saturating_sub(self.lifetime_s + 60);
        let mut kept = Vec::with_capacity(self.keys.len());
        let mut keys = std::mem::take(&mut self.keys).into_iter().peekable();
        while let Some(key) = keys.next() {
            let superseded = keys.peek().and_then(|next| created_s(&next.kid));
            let retired =
                created_s(&key.kid).is_some() && superseded.is_some_and(|at| at <= expired_before);
            if retired {
                write_private(&dir.join(format!("{}.retired", key.kid)), b"")?;
                std::fs::remove_file(dir.join(format!("{}.ed25519", key.kid)))?;
                self.retired.push(key.kid);
            } else {
                kept.push(key);
            }
        }
        self.keys = kept;
        // What a retired key signed is no longer good.
        self.verified.get_mut().clear();
        Ok(())
    }

    /// Keys deleted here whose retirement the log may not have yet.
    pub fn retired(&self) -> &[String] {
        &self.retired
    }

    fn rotate_at(&mut self, data_dir: &Path, now: u64) -> std::io::Result<()> {
        let dir = data_dir.join("keys").join("signing");
        create_private_dir(&dir)?;
        let mut seed = [0u8; 32];
        let mut tag = [0u8; 4];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        getrandom::fill(&mut tag).map_err(std::io::Error::other)?;
        // Names sort by creation, the newest signing: a key made within the second of
        // the one before is dated a second after it.
        let newest = self.keys.iter().filter_map(|key| created_s(&key.kid)).max();
        let at = newest.map_or(now, |newest| now.max(newest + 1));
        let kid = format!("{at:010}-{}", hex::encode(tag));
        write_private(
            &dir.join(format!("{kid}.ed25519")),
            hex::encode(seed).as_bytes(),
        )?;
        self.keys.push(SigningKey::from_seed(&seed, kid)?);
        Ok(())
    }

    /// A token for `user_id` with `scopes`, valid from `now` (Unix seconds).
    pub fn issue(&self, user_id: &str, scopes: &[&str], now: u64) -> (String, Claims) {
        self.issue_in(user_id, scopes, None, None, now)
    }

    /// A token for `subject` issued to `client_id` in the session `sid`.
    pub fn issue_in(
        &self,
        subject: &str,
        scopes: &[&str],
        sid: Option<&str>,
        client_id: Option<&str>,
        now: u64,
    ) -> (String, Claims) {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).expect("the OS random source works");
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_string(),
            aud: AUDIENCE.to_string(),
            iat: now,
            exp: now + self.lifetime_s,
            jti: hex::encode(jti),
            scope: scopes.join(" "),
            sid: sid.map(str::to_string),
            client_id: client_id.map(str::to_string),
        };
        (self.sign(&claims), claims)
    }

    /// `claims`, signed with the newest key (an OpenID Connect ID token).
    pub fn sign(&self, claims: &impl Serialize) -> String {
        let key = self.keys.last().expect("a signing key exists once open");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .expect("an Ed25519 key made by `from_seed` signs")
    }

    /// The claims of a token signed by this server, or by a key another server
    /// published (`published` answers its public key by `kid`), that has not expired.
    pub fn verify(
        &self,
        token: &str,
        published: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Claims, TokenError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let known = self.verified.lock().get(&digest).cloned();
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signature(token, published)?;
                let mut verified = self.verified.lock();
                if verified.len() >= VERIFIED_CAPACITY {
                    verified.clear();
                }
                verified.insert(digest, claims.clone());
                claims
            }
        };
        // As `jsonwebtoken` checks it, with no leeway: refused from its `exp` on.
        if unix_seconds() >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn verify_signature(
        &self,
        token: &str,
        published: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Claims, TokenError> {
        let invalid = |e: jsonwebtoken::errors::Error| TokenError::Invalid(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("not signed with EdDSA".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let unknown = || TokenError::Invalid("signed by an unknown key".into());
        let theirs;
        let decoding = match self.keys.iter().find(|key| key.kid == kid) {
            Some(key) => &key.decoding,
            None => {
                let x = published(&kid).ok_or_else(unknown)?;
                theirs = DecodingKey::from_ed_components(&x).map_err(|_| unknown())?;
                &theirs
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => invalid(e),
            })
    }

    /// This server's public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.iter().map(|key| key.jwk.clone()).collect(),
        }
    }

    /// This server's keys with those other servers published (`(kid, x)`).
    pub fn jwks_with<'a>(&self, published: impl Iterator<Item = (&'a str, &'a str)>) -> JwkSet {
        let mut set = self.jwks();
        for (kid, x) in published {
            if !self.keys.iter().any(|key| key.kid == kid) {
                set.keys.push(public_jwk(kid, x));
            }
        }
        set
    }

    /// Each key's id and public key (base64url), for the log to publish.
    pub fn public_keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys.iter().filter_map(|key| match &key.jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(pair) => Some((key.kid.as_str(), pair.x.as_str())),
            _ => None,
        })
    }

    pub fn lifetime_s(&self) -> u64 {
        self.lifetime_s
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

impl SigningKey {
    fn from_seed(seed: &[u8; 32], kid: String) -> std::io::Result<SigningKey> {
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        der.extend_from_slice(seed);
        let encoding = EncodingKey::from_ed_der(&der);
        der.fill(0);
        let bad = |e: jsonwebtoken::errors::Error| std::io::Error::other(e.to_string());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).map_err(bad)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(bad)?;
        Ok(SigningKey {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }
}

/// Drops the marker of a key deleted here, once the log has it retired.
pub fn forget_retired(data_dir: &Path, kid: &str) -> std::io::Result<()> {
    let marker = data_dir
        .join("keys")
        .join("signing")
        .join(format!("{kid}.retired"));
    match std::fs::remove_file(marker) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// A JWK of an Ed25519 public key (`x`, base64url).
fn public_jwk(kid: &str, x: &str) -> Jwk {
    Jwk {
        common: CommonParameters {
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            public_key_use: Some(PublicKeyUse::Signature),
            key_id: Some(kid.to_string()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: x.to_string(),
        }),
    }
}

/// When a key was made, from its id (`<Unix seconds>-<tag>`).
fn created_s(kid: &str) -> Option<u64> {
    kid.split_once('-')
        .filter(|(seconds, _)| seconds.len() == 10)
        .and_then(|(seconds, _)| seconds.parse().ok())
}

pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// 32 random bytes kept in `path` (0600), made on first use.
pub fn private_secret(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return hex::decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a secret", path.display()),
                )
            });
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    write_private(path, hex::encode(secret).as_bytes())?;
    Ok(secret)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a secret: created 0600 under a temporary name, synced, renamed into place.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No other server published a key.
    fn unpublished(_kid: &str) -> Option<String> {
        None
    }

    #[test]
    fn tokens_verify_across_restarts_and_rotations_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let now = unix_seconds();
        let mut tokens = Tokens::open(dir.path(), "tidemark", 60).unwrap();
        let (first, claims) = tokens.issue("usr_1", &[], now);
        assert_eq!(tokens.verify(&first, unpublished).unwrap(), claims);
        // The key is private to the owner.
        #[cfg(unix)]
        for entry in std::fs::read_dir(dir.path().join("keys/signing")).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        tokens.rotate(dir.path()).unwrap();
        let (second, _) = tokens.issue("usr_2", &["admin"], now);
        let reopened = Tokens::open(dir.path(), "tidemark", 60).unwrap();
        // Made within the same second, the new key still signs after a restart.
        assert_eq!(reopened.signing_kid(), tokens.signing_kid());
        assert_eq!(reopened.verify(&first, unpublished).unwrap().sub, "usr_1");
        assert_eq!(
            reopened.verify(&second, unpublished).unwrap().scope,
            "admin"
        );
        assert_eq!(reopened.jwks().keys.len(), 2);
        let (old, _) = reopened.issue("usr_1", &[], now - 120);
        assert!(matches!(
            reopened.verify(&old, unpublished),
            Err(TokenError::Expired)
        ));
        // Another server's key, another issuer, a tampered token: refused.
        let elsewhere = tempfile::tempdir().unwrap();
        let theirs = Tokens::open(elsewhere.path(), "tidemark", 60).unwrap();
        let (foreign, _) = theirs.issue("usr_1", &["admin"], now);
        assert!(matches!(
            reopened.verify(&foreign, unpublished),
            Err(TokenError::Invalid(_))
        ));
        // Unless that server published its key (through the log): then it verifies,
        // and the JWKS lists it with this server's own.
        let (kid, x) = theirs.public_keys().next().unwrap();
        // (A published key that is not the one that signed refuses it.)
        let (_, mine) = reopened.public_keys().next().unwrap();
        let wrong = |_: &str| Some(mine.to_string());
        assert!(reopened.verify(&foreign, wrong).is_err());
        let published = |asked: &str| (asked == kid).then(|| x.to_string());
        assert_eq!(reopened.verify(&foreign, published).unwrap().scope, "admin");
        let set = reopened.jwks_with([(kid, x)].into_iter());
        assert_eq!(set.keys.len(), 3);
        assert!(jsonwebtoken::decode::<Claims>(
            &foreign,
            &DecodingKey::from_jwk(set.find(kid).unwrap()).unwrap(),
            &{
                let mut validation = Validation::new(Algorithm::EdDSA);
                validation.set_audience(&[AUDIENCE]);
                validation
            },
        )
        .is_ok());
        let other_issuer = Tokens::open(dir.path(), "elsewhere", 60).unwrap();
        assert!(other_issuer.verify(&first, unpublished).is_err());
        let mut tampered = first.clone().into_bytes();
        let middle = tampered.len() / 2;
        tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
        assert!(reopened
            .verify(std::str::from_utf8(&tampered).unwrap(), unpublished)
            .is_err());
        assert!(reopened.verify("not a token", unpublished).is_err());
    }

    #[test]
    fn keys_rotate_when_old_and_retire_once_their_tokens_have_expired() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400;
        let start = unix_seconds();
        let mut tokens = Tokens::open(dir.path(), "tidemark", 900).unwrap();
        let first = tokens.signing_kid().to_string();
        let (old_token, _) = tokens.issue("usr_1", &[], start);
        // Not old yet: nothing changes.
        tokens.maintain(dir.path(), start + day, 30 * day).unwrap();
        assert_eq!(tokens.signing_kid(), first);
        // Thirty days on, a new key signs; the old one still verifies what it signed.
        let later = start + 30 * day;
        tokens.maintain(dir.path(), later, 30 * day).unwrap();
        assert_ne!(tokens.signing_kid(), first);
        assert_eq!(tokens.jwks().keys.len(), 2);
        let (new_token, _) = tokens.issue("usr_1", &[], later);
        assert_eq!(
            jsonwebtoken::decode_header(&new_token)
                .unwrap()
                .kid
                .unwrap(),
            tokens.signing_kid()
        );
        assert_eq!(tokens.verify(&old_token, unpublished).unwrap().sub, "usr_1");
        // Within a token lifetime of the rotation the old key stays; after it, it goes,
        // from the folder too.
        tokens.maintain(dir.path(), later + 600, 30 * day).unwrap();
        assert_eq!(tokens.jwks().keys.len(), 2);
        tokens
            .maintain(dir.path(), later + 900 + 60, 30 * day)
            .unwrap();
        assert_eq!(tokens.jwks().keys.len(), 1);
        // The deleted key is remembered until the log has it retired.
        assert_eq!(tokens.retired(), std::slice::from_ref(&first));
        let reopened = Tokens::open(dir.path(), "tidemark", 900).unwrap();
        assert_eq!(reopened.signing_kid(), tokens.signing_kid());
        assert_eq!(reopened.jwks().keys.len(), 1);
        assert_eq!(reopened.retired(), std::slice::from_ref(&first));
        forget_retired(dir.path(), &first).unwrap();
        let reopened = Tokens::open(dir.path(), "tidemark", 900).unwrap();
        assert!(reopened.retired().is_empty());
        // 0 never rotates.
        tokens.maintain(dir.path(), later + 3650 * day, 0).unwrap();
        assert_eq!(tokens.signing_kid(), reopened.signing_kid());
    }
}
