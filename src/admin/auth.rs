//! The admin bearer check: the secret compared in constant time, the API off without one.

use super::model::AdminError;

/// Whether a request with this `Authorization` header may use the admin API of a deployment
/// whose admin secret is `secret` (`None` or empty: the API is off).
pub fn authorize(secret: Option<&str>, authorization: Option<&str>) -> Result<(), AdminError> {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(AdminError::disabled());
    };
    let given = crate::auth::policy::bearer(authorization);
    match given {
        Some(token) if same(token.as_bytes(), secret.as_bytes()) => Ok(()),
        Some(_) => Err(AdminError::unauthorized("the admin secret is wrong")),
        None => Err(AdminError::unauthorized(
            "send the admin secret as Authorization: Bearer <ADMIN_SECRET>",
        )),
    }
}

/// Equality whose time does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_a_secret() {
        for secret in [None, Some("")] {
            let e = authorize(secret, Some("Bearer x")).unwrap_err();
            assert_eq!((e.status, e.code), (404, "ADMIN_DISABLED"));
        }
    }

    #[test]
    fn the_bearer_must_match_exactly() {
        let secret = Some("s3cret");
        assert!(authorize(secret, Some("Bearer s3cret")).is_ok());
        for header in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearer "),
            Some("Basic s3cret"),
        ] {
            let e = authorize(secret, header).unwrap_err();
            assert_eq!((e.status, e.code), (401, "UNAUTHORIZED"), "{header:?}");
        }
    }
}
