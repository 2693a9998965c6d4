//! A project's configuration, as kept in Workers KV and managed through `/v1/config/<project>`.

use serde::{Deserialize, Serialize};

/// Shortest signing secret accepted, in bytes (HS256 wants at least 256 bits of key).
pub const MIN_SECRET_BYTES: usize = 32;
/// Most signing secrets a project keeps at once (rotation needs two or three).
pub const MAX_SECRETS: usize = 8;
/// Longest project name.
pub const MAX_PROJECT_BYTES: usize = 64;

/// A project's configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfig {
    /// The first signs; all verify (rotation: add a new one first, retire the old one later).
    pub signing_secrets: Vec<String>,
    /// Origins allowed to read and write from browsers; empty: any.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Reads need no token.
    #[serde(default)]
    pub public: bool,
}

/// What `GET /v1/config/<project>` shows: never the secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PublicConfig {
    pub project: String,
    pub signing_keys: usize,
    pub cors_origins: Vec<String>,
    pub public: bool,
}

impl ProjectConfig {
    /// Parses and checks a configuration sent to the config API.
    pub fn parse(body: &[u8]) -> Result<ProjectConfig, String> {
        let config: ProjectConfig =
            serde_json::from_slice(body).map_err(|e| format!("invalid project config: {e}"))?;
        if config.signing_secrets.is_empty() {
            return Err("signingSecrets must hold at least one secret".into());
        }
        if config.signing_secrets.len() > MAX_SECRETS {
            return Err(format!(
                "signingSecrets holds at most {MAX_SECRETS} secrets"
            ));
        }
        if let Some(short) = config
            .signing_secrets
            .iter()
            .position(|s| s.len() < MIN_SECRET_BYTES)
        {
            return Err(format!(
                "signingSecrets[{short}] is shorter than {MIN_SECRET_BYTES} bytes"
            ));
        }
        Ok(config)
    }

    /// Rotation: `secret` signs from now on; the current ones still verify (the oldest is
    /// dropped past [`MAX_SECRETS`]).
    pub fn rotate(&mut self, secret: String) -> Result<(), String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "signingSecret is shorter than {MIN_SECRET_BYTES} bytes"
            ));
        }
        self.signing_secrets.insert(0, secret);
        self.signing_secrets.truncate(MAX_SECRETS);
        Ok(())
    }

    /// Retires every key but the one that signs: tokens signed with older keys stop working.
    pub fn retire_old_keys(&mut self) {
        self.signing_secrets.truncate(1);
    }

    /// The configuration as the API shows it.
    pub fn public_view(&self, project: &str) -> PublicConfig {
        PublicConfig {
            project: project.to_owned(),
            signing_keys: self.signing_secrets.len(),
            cors_origins: self.cors_origins.clone(),
            public: self.public,
        }
    }
}

/// Whether `name` can be a project: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_project(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROJECT_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The KV key of a project's configuration.
pub fn config_key(project: &str) -> String {
    format!("project:{project}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked_and_shown_without_secrets() {
        let secret = "s".repeat(32);
        let config = ProjectConfig::parse(
            format!(r#"{{"signingSecrets":["{secret}"],"public":true}}"#).as_bytes(),
        )
        .unwrap();
        assert!(config.public && config.cors_origins.is_empty());
        let shown = serde_json::to_string(&config.public_view("p")).unwrap();
        assert!(!shown.contains(&secret));
        for bad in [
            r#"{"signingSecrets":[]}"#,
            r#"{"signingSecrets":["short"]}"#,
            r#"{"signingSecrets":"x"}"#,
            r#"{"signingSecrets":["ssssssssssssssssssssssssssssssss"],"other":1}"#,
            "not json",
        ] {
            assert!(ProjectConfig::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_puts_the_new_key_first_and_retiring_keeps_it_alone() {
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let mut config = ProjectConfig {
            signing_secrets: vec![a.clone()],
            cors_origins: vec![],
            public: false,
        };
        assert!(config.rotate("short".into()).is_err());
        config.rotate(b.clone()).unwrap();
        assert_eq!(config.signing_secrets, [b.clone(), a]);
        config.retire_old_keys();
        assert_eq!(config.signing_secrets, [b]);
        for i in 0..20 {
            config.rotate(format!("{i:0>32}")).unwrap();
        }
        assert_eq!(config.signing_secrets.len(), MAX_SECRETS);
    }

    #[test]
    fn project_names() {
        assert!(valid_project("my-app_2"));
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_project(bad), "{bad}");
        }
    }
}
