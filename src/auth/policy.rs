//! What a request to a project's stream needs, and whether its token gives it: `401` for a
//! missing or invalid token, `403` for a valid one without the scope, project or stream.

use super::project::ProjectConfig;
use super::token::{verify, Claims, Scope};

/// A refusal, in the `{"code", "error"}` form of the other JSON errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Denied {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Denied {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({ "code": self.code, "error": self.message }).to_string()
    }
}

/// A stream path split into its project and the stream within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPath<'a> {
    pub project: &'a str,
    /// The path after the project (what a token's `stream_id` names).
    pub stream: &'a str,
}

/// The project and stream of `/v1/stream/<project>/<stream…>`; `None` for a path with one
/// segment (no project) or a project name no project can have.
pub fn split_stream_path(path: &str) -> Option<StreamPath<'_>> {
    let rest = path.strip_prefix("/v1/stream/")?;
    let (project, stream) = rest.split_once('/')?;
    (super::project::valid_project(project) && !stream.is_empty())
        .then_some(StreamPath { project, stream })
}

/// The scope a stream request needs, by method (`None`: none, e.g. a preflight).
pub fn needed_scope(method: &str) -> Option<Scope> {
    match method {
        "GET" | "HEAD" => Some(Scope::Read),
        "PUT" | "POST" | "DELETE" => Some(Scope::Write),
        _ => None,
    }
}

/// The bearer token of an `Authorization` header.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Whether a request with `authorization` may do what needs `need` on `stream` (`None`: the
/// project itself, e.g. its configuration) of `project`, configured as `config`, at `now`
/// (seconds). The claims when a token was checked.
pub fn authorize(
    config: &ProjectConfig,
    project: &str,
    stream: Option<&str>,
    need: Scope,
    authorization: Option<&str>,
    now: u64,
) -> Result<Option<Claims>, Denied> {
    if need == Scope::Read && config.public {
        return Ok(None);
    }
    let Some(token) = bearer(authorization) else {
        return Err(Denied::new(
            401,
            "MISSING_TOKEN",
            format!("project {project} needs a token: Authorization: Bearer <token>"),
        ));
    };
    let claims = verify(token, &config.signing_secrets, now)
        .map_err(|e| Denied::new(401, e.code(), e.to_string()))?;
    if claims.sub != project {
        return Err(Denied::new(
            403,
            "WRONG_PROJECT",
            format!("the token is for project {}, not {project}", claims.sub),
        ));
    }
    if claims.scope < need {
        return Err(Denied::new(
            403,
            "INSUFFICIENT_SCOPE",
            format!(
                "this needs a {need:?} token; this one is {:?}",
                claims.scope
            )
            .to_lowercase(),
        ));
    }
    // A token for one stream is for nothing else: not another stream, not the project itself.
    if let Some(only) = &claims.stream_id {
        if stream != Some(only.as_str()) {
            return Err(Denied::new(
                403,
                "WRONG_STREAM",
                format!("the token is for stream {only} only"),
            ));
        }
    }
    Ok(Some(claims))
}

/// Whether the token of a LiveStore client (its sync payload's `authToken`) may sync store
/// `store_id` (`need`: write to sync, read to read the store's stream) in `project`.
pub fn authorize_store(
    config: &ProjectConfig,
    project: &str,
    store_id: &str,
    need: Scope,
    token: Option<&str>,
    now: u64,
) -> Result<Option<Claims>, Denied> {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let claims = authorize(config, project, None, need, authorization.as_deref(), now)?;
    match claims {
        Some(claims) if !claims.covers_store(store_id) => Err(Denied::new(
            403,
            "WRONG_STORE",
            format!("the token is not for store {store_id}"),
        )),
        claims => Ok(claims),
    }
}

/// A refusal of a fork whose source is in another project than the fork.
pub fn fork_across_projects(source: &str, project: &str) -> Denied {
    Denied::new(
        403,
        "FORK_ACROSS_PROJECTS",
        format!("a fork stays within its project: {source} is not in project {project}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::sign;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn config(public: bool) -> ProjectConfig {
        ProjectConfig {
            signing_secrets: vec![KEY.into()],
            cors_origins: vec![],
            public,
        }
    }

    fn token(project: &str, scope: Scope, stream: Option<&str>) -> String {
        let claims = Claims {
            sub: project.into(),
            scope,
            exp: 2_000,
            nbf: None,
            iat: None,
            stream_id: stream.map(str::to_owned),
            store: None,
        };
        format!("Bearer {}", sign(&claims, KEY).unwrap())
    }

    fn check(
        need: Scope,
        stream: Option<&str>,
        auth: Option<&str>,
    ) -> Result<(), (u16, &'static str)> {
        authorize(&config(false), "p", stream, need, auth, 1_000)
            .map(|_| ())
            .map_err(|d| (d.status, d.code))
    }

    #[test]
    fn the_matrix() {
        let read = token("p", Scope::Read, None);
        let write = token("p", Scope::Write, None);
        let manage = token("p", Scope::Manage, None);
        let other = token("q", Scope::Manage, None);
        let one = token("p", Scope::Write, Some("a/b"));
        let s = Some("a/b");
        assert_eq!(check(Scope::Read, s, None), Err((401, "MISSING_TOKEN")));
        assert_eq!(
            check(Scope::Read, s, Some("Bearer junk")),
            Err((401, "INVALID_TOKEN"))
        );
        assert_eq!(check(Scope::Read, s, Some(&read)), Ok(()));
        assert_eq!(
            check(Scope::Write, s, Some(&read)),
            Err((403, "INSUFFICIENT_SCOPE"))
        );
        assert_eq!(check(Scope::Write, s, Some(&write)), Ok(()));
        assert_eq!(
            check(Scope::Manage, None, Some(&write)),
            Err((403, "INSUFFICIENT_SCOPE"))
        );
        assert_eq!(check(Scope::Manage, None, Some(&manage)), Ok(()));
        assert_eq!(
            check(Scope::Read, s, Some(&other)),
            Err((403, "WRONG_PROJECT"))
        );
        assert_eq!(check(Scope::Write, s, Some(&one)), Ok(()));
        assert_eq!(
            check(Scope::Read, Some("a/c"), Some(&one)),
            Err((403, "WRONG_STREAM"))
        );
        assert_eq!(
            check(Scope::Read, None, Some(&one)),
            Err((403, "WRONG_STREAM"))
        );
        // public projects read without a token, and still need one to write
        assert!(authorize(&config(true), "p", s, Scope::Read, None, 1_000).is_ok());
        assert!(authorize(&config(true), "p", s, Scope::Write, None, 1_000).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(
            split_stream_path("/v1/stream/p/a/b"),
            Some(StreamPath {
                project: "p",
                stream: "a/b"
            })
        );
        assert_eq!(split_stream_path("/v1/stream/single"), None);
        assert_eq!(split_stream_path("/v1/stream/p/"), None);
        assert_eq!(split_stream_path("/v1/stream/bad%20name/x"), None);
        assert_eq!(needed_scope("OPTIONS"), None);
        assert_eq!(bearer(Some("Bearer  t ")), Some("t"));
        assert_eq!(bearer(Some("Basic t")), None);
    }
}
