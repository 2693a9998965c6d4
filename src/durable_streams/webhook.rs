//! Webhook signing and safety (Durable Streams §6): deliveries are signed with Ed25519 as
//! `Webhook-Signature: t=<unix seconds>,kid=<kid>,ed25519=<base64url signature of "<t>.<body>">`,
//! the public key is published as a JWK set, and a webhook URL that points into a private
//! address range is refused (loopback only where local development allows it).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The content type of the key set.
pub const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";

/// The server's webhook signing key.
pub struct WebhookKey {
    key: SigningKey,
    kid: String,
}

impl WebhookKey {
    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> WebhookKey {
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key().to_bytes();
        let digest = Sha256::digest(public);
        let kid = format!("ds_{}", URL_SAFE_NO_PAD.encode(&digest[..12]));
        WebhookKey { key, kid }
    }

    /// The key of a seed written as base64url (or standard base64), as kept in a secret.
    pub fn from_text(text: &str) -> Result<WebhookKey, String> {
        let text = text.trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .map_err(|e| format!("the webhook signing key is not base64: {e}"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the webhook signing key must be 32 bytes".to_owned())?;
        Ok(WebhookKey::from_seed(&seed))
    }

    /// The seed as base64url, to keep.
    pub fn seed_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.to_bytes())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `Webhook-Signature` header of `body` sent at `unix_s`.
    pub fn signature(&self, unix_s: u64, body: &[u8]) -> String {
        let mut signed = format!("{unix_s}.").into_bytes();
        signed.extend_from_slice(body);
        let signature = self.key.sign(&signed);
        format!(
            "t={unix_s},kid={},ed25519={}",
            self.kid,
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// The public key set (`/v1/stream/__ds/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
            }]
        })
    }
}

/// The URL to call, as a WHATWG parser reads it (so `https://0x0a.0.0.1/` is the address it
/// names), or why it is refused: not https, or a private, loopback, link-local or metadata
/// address. `allow_loopback`: local development, where receivers listen on 127.0.0.1 over http.
pub fn check_webhook_url(text: &str, allow_loopback: bool) -> Result<String, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| format!("webhook.url must be a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the webhook URL must not carry credentials".into());
    }
    let host = url
        .host()
        .ok_or_else(|| "the webhook URL has no host".to_owned())?;
    let (loopback, private) = match &host {
        url::Host::Ipv4(ip) => (ip.is_loopback(), private_v4(*ip)),
        url::Host::Ipv6(ip) => (is_loopback(IpAddr::V6(*ip)), private_v6(*ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let loopback = name == "localhost" || name.ends_with(".localhost");
            let local =
                name.ends_with(".local") || name.ends_with(".internal") || !name.contains('.');
            (loopback, loopback || local)
        }
    };
    match url.scheme() {
        "https" | "http" if loopback && allow_loopback => Ok(url.to_string()),
        "http" => Err("the webhook URL must use https".into()),
        "https" if private => Err(format!("{host} is a private, loopback or local address")),
        "https" => Ok(url.to_string()),
        _ => Err("the webhook URL must use https".into()),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return private_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn signatures_verify_against_the_published_key() {
        let key = WebhookKey::from_seed(&[7u8; 32]);
        assert!(key.kid().starts_with("ds_"));
        let header = key.signature(1_800_000_000, b"{\"a\":1}");
        let parts: Vec<&str> = header.split(',').collect();
        assert_eq!(parts[0], "t=1800000000");
        assert_eq!(parts[1], format!("kid={}", key.kid()));
        let sig = URL_SAFE_NO_PAD
            .decode(parts[2].strip_prefix("ed25519=").unwrap())
            .unwrap();
        let jwks = key.jwks();
        let x = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let public = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        let signature = Signature::from_slice(&sig).unwrap();
        assert!(public.verify(b"1800000000.{\"a\":1}", &signature).is_ok());
        assert!(public.verify(b"1800000001.{\"a\":1}", &signature).is_err());
        assert_eq!(jwks["keys"][0]["kid"], key.kid());
        // Kept as text and read back, it is the same key.
        let again = WebhookKey::from_text(&key.seed_text()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(WebhookKey::from_text("short").is_err());
    }

    #[test]
    fn private_addresses_are_refused() {
        for bad in [
            "http://10.0.0.1/hook",
            "http://192.168.1.2/",
            "http://172.16.5.4:8080/x",
            "http://169.254.169.254/latest",
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:10.0.0.1]/x",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://2130706433/",
            "ftp://example.com/",
            "example.com/hook",
            "http://user@example.com/",
            "http://0x7f.1/",
            "http://10.0.0.1\\.evil.com/",
            "http://%31%30.0.0.1/",
            "http://1\t0.0.0.1/",
            "http://intranet/",
            "http://metadata.google.internal/",
        ] {
            assert!(
                check_webhook_url(bad, false).is_err(),
                "{bad} should be refused"
            );
            assert!(
                check_webhook_url(&bad.replace("http:", "https:"), false).is_err(),
                "{bad} over https"
            );
        }
        assert!(check_webhook_url("http://example.com/hook", false).is_err());
        assert!(check_webhook_url("http://example.com/hook", true).is_err());
        for good in [
            "https://example.com/hook",
            "https://93.184.216.34:8080/x",
            "https://[2606:4700::1111]/",
        ] {
            assert!(
                check_webhook_url(good, false).is_ok(),
                "{good} should be allowed"
            );
        }
        assert_eq!(
            check_webhook_url("http://127.0.0.1:4000/webhook", true).as_deref(),
            Ok("http://127.0.0.1:4000/webhook")
        );
        assert!(check_webhook_url("http://localhost:4000/", true).is_ok());
        assert!(check_webhook_url("http://10.0.0.1/hook", true).is_err());
    }
}
