//! OAuth clients: who may ask for tokens, and where a user may be sent back to.
//!
//! Every client is public (a browser or native app that cannot keep a secret), so the
//! authorization-code grant always needs PKCE (S256). `tidemark-cli` is built in: the
//! first-party command-line client, the only one the password grant is open to, and
//! a native app that may be redirected to any port of a loopback address (RFC 8252
//! 7.3). Others come from `[[auth.clients]]`, each with exact redirect URIs. Service
//! accounts are not clients here: they use the client-credentials grant with their
//! API key (`client_id` = the key's id, `client_secret` = the key).

use std::collections::BTreeMap;

use url::Url;

use crate::config::ClientConfig;

/// The first-party command-line client.
pub const CLI_CLIENT: &str = "tidemark-cli";

#[derive(Debug)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    redirect_uris: Vec<Url>,
    /// The built-in client: the password grant, and any loopback redirect.
    first_party: bool,
}

impl Client {
    /// Whether the password grant is open to this client.
    pub fn password_grant(&self) -> bool {
        self.first_party
    }

    /// Whether `uri` is one this client registered (compared exactly, after parsing),
    /// or, for the native client, a loopback address on any port.
    pub fn redirects_to(&self, uri: &Url) -> bool {
        if self.first_party && uri.scheme() == "http" && is_loopback(uri) {
            return uri.fragment().is_none();
        }
        self.redirect_uris
            .iter()
            .any(|registered| registered == uri)
    }
}

/// The clients, by id.
#[derive(Debug)]
pub struct Clients {
    by_id: BTreeMap<String, Client>,
}

impl Clients {
    /// The built-in client and the configured ones, or why the configuration is wrong.
    pub fn new(configured: &[ClientConfig]) -> Result<Clients, String> {
        let mut by_id = BTreeMap::new();
        by_id.insert(
            CLI_CLIENT.to_string(),
            Client {
                client_id: CLI_CLIENT.into(),
                name: "tidemark command line".into(),
                redirect_uris: Vec::new(),
                first_party: true,
            },
        );
        for client in configured {
            let id = &client.client_id;
            let valid_id = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            // An ID token's audience is its client: no client may be named like the
            // audience of access tokens, or its ID tokens would pass as those.
            if !valid_id || id == crate::auth::tokens::AUDIENCE {
                return Err(format!(
                    "client_id {id:?} must be 1 to 64 letters, digits, '.', '_' or '-', and not `tidemark`"
                ));
            }
            if client.redirect_uris.is_empty() {
                return Err(format!("client {id:?} needs at least one redirect URI"));
            }
            let redirect_uris = client
                .redirect_uris
                .iter()
                .map(|uri| redirect_uri(uri).map_err(|why| format!("client {id:?}: {uri:?} {why}")))
                .collect::<Result<Vec<Url>, String>>()?;
            let name = match client.name.trim() {
                "" => id.clone(),
                name => name.to_string(),
            };
            let added = Client {
                client_id: id.clone(),
                name,
                redirect_uris,
                first_party: false,
            };
            if by_id.insert(id.clone(), added).is_some() {
                return Err(format!(
                    "client_id {id:?} is registered twice (or is built in)"
                ));
            }
        }
        Ok(Clients { by_id })
    }

    pub fn get(&self, client_id: &str) -> Option<&Client> {
        self.by_id.get(client_id)
    }
}

/// A registrable redirect URI: absolute, no fragment (RFC 6749 3.1.2), and either
/// https or http to this machine.
fn redirect_uri(uri: &str) -> Result<Url, &'static str> {
    let url = Url::parse(uri).map_err(|_| "is not an absolute URI")?;
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err("must be https, or http on a loopback address"),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, uris: &[&str]) -> ClientConfig {
        ClientConfig {
            client_id: id.into(),
            name: String::new(),
            redirect_uris: uris.iter().map(|uri| uri.to_string()).collect(),
        }
    }

    #[test]
    fn redirects_go_only_to_registered_uris_or_the_cli_loopback() {
        let clients = Clients::new(&[client("shop", &["https://shop.example/callback"])]).unwrap();
        let shop = clients.get("shop").unwrap();
        let url = |uri: &str| Url::parse(uri).unwrap();
        assert!(shop.redirects_to(&url("https://shop.example/callback")));
        for other in [
            "https://shop.example/callback/",
            "https://shop.example/callback?x=1",
            "https://evil.example/callback",
            "http://shop.example/callback",
            "http://127.0.0.1:8000/callback",
        ] {
            assert!(!shop.redirects_to(&url(other)), "{other}");
        }
        assert!(!shop.password_grant());
        let cli = clients.get(CLI_CLIENT).unwrap();
        assert!(cli.password_grant());
        assert!(cli.redirects_to(&url("http://127.0.0.1:53682/callback")));
        assert!(cli.redirects_to(&url("http://[::1]:8080/")));
        assert!(!cli.redirects_to(&url("https://shop.example/callback")));
        assert!(!cli.redirects_to(&url("http://10.0.0.1:8000/callback")));
    }

    #[test]
    fn bad_registrations_are_refused() {
        for (bad, why) in [
            (client("shop", &[]), "at least one"),
            (client("", &["https://a.example/"]), "client_id"),
            (client("a b", &["https://a.example/"]), "client_id"),
            (client(CLI_CLIENT, &["https://a.example/"]), "twice"),
            (client("shop", &["/callback"]), "absolute"),
            (client("shop", &["https://a.example/#x"]), "fragment"),
            (client("shop", &["http://a.example/"]), "loopback"),
        ] {
            let error = Clients::new(&[bad]).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }
}
