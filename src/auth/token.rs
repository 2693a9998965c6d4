//! HS256 JSON Web Tokens: `{sub: <project>, scope: "read" | "write" | "manage", exp, nbf?,
//! stream_id?}`, verified against every signing secret of the project (rotation: the first
//! signs, all verify). Anything else (`alg: none`, other algorithms, a bad signature, expired,
//! not yet valid, oversized, malformed) is refused, and says why.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Longest token accepted, in bytes: a header of a few of them fits in any request.
pub const MAX_TOKEN_BYTES: usize = 4_096;

/// What a token allows, each level including the ones below it.
#[derive(Serialize, Deserialize, Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Manage,
}

/// The claims of a verified token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The project.
    pub sub: String,
    pub scope: Scope,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The one stream (path after the project) the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// The LiveStore store the token is for: its id, or a prefix of ids ending in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

impl Claims {
    /// Whether the token may be used for store `store_id` (a token without a store claim is
    /// for streams only).
    pub fn covers_store(&self, store_id: &str) -> bool {
        match self.store.as_deref() {
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => store_id.starts_with(prefix),
                None => pattern == store_id,
            },
            None => false,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is not a JWS in compact form (three base64url parts)")]
    Malformed,
    #[error("the token's algorithm must be HS256")]
    Algorithm,
    #[error("the token's signature does not verify with any key of the project")]
    Signature,
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

impl TokenError {
    /// The error code of the protocol's JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::TooLarge | TokenError::Malformed | TokenError::Claims(_) => "INVALID_TOKEN",
            TokenError::Algorithm => "UNSUPPORTED_ALGORITHM",
            TokenError::Signature => "BAD_SIGNATURE",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::NotYetValid => "TOKEN_NOT_YET_VALID",
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// An HMAC-SHA256 keyed with `secret` (HMAC takes keys of any length: never `None` in practice).
fn mac(secret: &str) -> Option<Hmac<Sha256>> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()
}

/// Verifies `token` with any of `secrets` at `now` (seconds since the epoch).
pub fn verify(token: &str, secrets: &[String], now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    let signature = decode(signature)?;
    let signed = &token[..token.len() - signature_len(token)];
    let verified = secrets.iter().any(|secret| {
        mac(secret).is_some_and(|mut mac| {
            mac.update(signed.as_bytes());
            mac.verify_slice(&signature).is_ok()
        })
    });
    if !verified {
        return Err(TokenError::Signature);
    }
    let claims: Claims =
        serde_json::from_slice(&decode(payload)?).map_err(|e| TokenError::Claims(e.to_string()))?;
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now < nbf) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// The expiry of a token that was verified elsewhere (the Worker's gate), read without checking
/// its signature: what a sync object needs to end a socket when the token that opened it
/// expires. `None` for anything that is not a JWS with a numeric `exp`.
pub fn unverified_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

/// Bytes of the signature part and the dot before it.
fn signature_len(token: &str) -> usize {
    token.rsplit('.').next().map_or(0, |s| s.len() + 1)
}

/// Signs `claims` with `secret` (HS256): what the command-line tool and tests mint.
pub fn sign(claims: &Claims, secret: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    // Plain strings and integers: serializing cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{header}.{payload}");
    let mut mac = mac(secret)?;
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Some(format!("{signed}.{signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(scope: Scope, exp: u64) -> Claims {
        Claims {
            sub: "p1".into(),
            scope,
            exp,
            nbf: None,
            iat: None,
            stream_id: None,
            store: None,
        }
    }

    fn keys(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_signed_token_verifies_with_any_key_of_the_project() {
        let token = sign(&claims(Scope::Write, 2_000), "old-key").unwrap();
        assert_eq!(
            verify(&token, &keys(&["new-key", "old-key"]), 1_000),
            Ok(claims(Scope::Write, 2_000))
        );
        assert_eq!(
            verify(&token, &keys(&["new-key"]), 1_000),
            Err(TokenError::Signature),
            "a retired key no longer verifies"
        );
    }

    #[test]
    fn time_bounds() {
        let token = sign(&claims(Scope::Read, 2_000), "k").unwrap();
        assert_eq!(
            verify(&token, &keys(&["k"]), 2_000),
            Err(TokenError::Expired)
        );
        let mut early = claims(Scope::Read, 3_000);
        early.nbf = Some(2_500);
        let token = sign(&early, "k").unwrap();
        assert_eq!(
            verify(&token, &keys(&["k"]), 2_000),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&token, &keys(&["k"]), 2_500).is_ok());
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let good = sign(&claims(Scope::Read, 2_000), "k").unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let hs512 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#);
        let elevated =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(Scope::Manage, 2_000)).unwrap());
        let cases = [
            (format!("{none}.{}.", parts[1]), TokenError::Algorithm),
            (
                format!("{hs512}.{}.{}", parts[1], parts[2]),
                TokenError::Algorithm,
            ),
            (
                format!("{}.{elevated}.{}", parts[0], parts[2]),
                TokenError::Signature,
            ),
            ("a.b".to_owned(), TokenError::Malformed),
            ("a.b.c.d".to_owned(), TokenError::Malformed),
            ("!!.??.**".to_owned(), TokenError::Malformed),
            (format!("{good}x"), TokenError::Signature),
            ("x".repeat(MAX_TOKEN_BYTES + 1), TokenError::TooLarge),
        ];
        for (token, error) in cases {
            assert_eq!(
                verify(&token, &keys(&["k"]), 1_000),
                Err(error),
                "{token:.60}"
            );
        }
        let no_exp = format!(
            "{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(br#"{"sub":"p1","scope":"read"}"#)
        );
        let mut mac = mac("k").unwrap();
        mac.update(no_exp.as_bytes());
        let token = format!(
            "{no_exp}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert!(matches!(
            verify(&token, &keys(&["k"]), 1_000),
            Err(TokenError::Claims(_))
        ));
    }

    #[test]
    fn store_claims_name_a_store_or_a_prefix() {
        let mut c = claims(Scope::Write, 2_000);
        assert!(!c.covers_store("s"), "no store claim: streams only");
        c.store = Some("team-1/*".into());
        assert!(c.covers_store("team-1/todos") && !c.covers_store("team-2/todos"));
        c.store = Some("exact".into());
        assert!(c.covers_store("exact") && !c.covers_store("exactly"));
    }

    #[test]
    fn the_expiry_of_a_verified_token_is_read_back() {
        let token = sign(&claims(Scope::Write, 4_321), "k").unwrap();
        assert_eq!(unverified_expiry(&token), Some(4_321));
        assert_eq!(unverified_expiry("a.b.c"), None);
        assert_eq!(unverified_expiry("nonsense"), None);
    }

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Manage > Scope::Write && Scope::Write > Scope::Read);
    }
}
