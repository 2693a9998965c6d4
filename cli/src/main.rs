//! `livestore-sync`: the chores of a deployment from a terminal. Projects and their keys through
//! the config API, tokens minted locally, and live tails of streams and stores.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use livestore_sync_rs::auth::token::{sign, Claims, Scope};
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const HELP: &str = "\
livestore-sync: projects, keys, tokens and live tails for a livestore-sync-rs Worker

USAGE
  livestore-sync <command> [arguments] [options]

PROJECTS (need the Worker's admin secret, or a manage token of the project)
  project create <project> [--public]   create a project with a new signing secret; prints the secret
  project rotate <project>              add a new signing secret (it signs; older ones still verify)
  project retire <project>              drop every signing secret but the newest
  project show <project>                the project's configuration (never its secrets)

TOKENS (minted here, with a signing secret of the project)
  token <project> --secret <secret> [--scope read|write|manage] [--ttl 1h]
        [--stream <stream>] [--store <storeId | prefix*>]
                                        prints an HS256 token (default scope read, ttl 1h)

LIVE TAILS
  tail <project>/<stream…>              print a Durable Stream's messages as they arrive
  tail --store <storeId>                print a LiveStore store's events as they arrive
        [--offset <offset>] [--token <token>] [--limit <n>]
                                        from the start (offset -1) unless --offset is given;
                                        --limit ends after n messages

OPTIONS
  --url <url>            the Worker (env LIVESTORE_SYNC_URL; default http://127.0.0.1:8787)
  --admin-secret <s>     the Worker's ADMIN_SECRET (env ADMIN_SECRET)
  --token <token>        a token to send (env LIVESTORE_SYNC_TOKEN)
  -h, --help             this help

EXAMPLES
  livestore-sync project create my-app --admin-secret \"$ADMIN_SECRET\"
  livestore-sync token my-app --secret <secret> --scope write --stream orders --ttl 30m
  livestore-sync tail my-app/orders --token <token>
  livestore-sync tail --store my-store --token <token with a store claim>
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(Args::parse(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("livestore-sync: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Positional arguments and `--name value` options (`--flag` alone is `true`).
struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

impl Args {
    fn parse(args: Vec<String>) -> Args {
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut iter = args.into_iter().peekable();
        while let Some(arg) = iter.next() {
            if arg == "-h" {
                options.push(("help".to_owned(), "true".to_owned()));
            } else if let Some(name) = arg.strip_prefix("--") {
                let value = match iter.peek() {
                    Some(next) if !next.starts_with("--") => iter.next().unwrap_or_default(),
                    _ => "true".to_owned(),
                };
                options.push((name.to_owned(), value));
            } else {
                positional.push(arg);
            }
        }
        Args {
            positional,
            options,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn url(&self) -> String {
        self.get("url")
            .map(str::to_owned)
            .or_else(|| std::env::var("LIVESTORE_SYNC_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8787".to_owned())
            .trim_end_matches('/')
            .to_owned()
    }

    fn option_or_env(&self, name: &str, env: &str) -> Option<String> {
        self.get(name)
            .map(str::to_owned)
            .or_else(|| std::env::var(env).ok())
            .filter(|value| !value.is_empty())
    }
}

fn run(args: Args) -> Result<(), String> {
    let command: Vec<&str> = args.positional.iter().map(String::as_str).collect();
    if args.get("help").is_some() || command.is_empty() {
        print!("{HELP}");
        return Ok(());
    }
    match command.as_slice() {
        ["project", "create", project] => {
            let secret = new_secret()?;
            let body = serde_json::json!({
                "signingSecrets": [secret],
                "public": args.get("public").is_some(),
            });
            let shown = config_call(&args, "PUT", project, "", Some(body))?;
            println!("{shown}");
            eprintln!("signing secret (shown once; keep it where you mint tokens):");
            println!("{secret}");
            Ok(())
        }
        ["project", "rotate", project] => {
            let secret = new_secret()?;
            let body = serde_json::json!({ "signingSecret": secret });
            let shown = config_call(&args, "POST", project, "/keys", Some(body))?;
            println!("{shown}");
            eprintln!(
                "new signing secret (mint new tokens with it; older keys verify until retired):"
            );
            println!("{secret}");
            Ok(())
        }
        ["project", "retire", project] => {
            println!(
                "{}",
                config_call(&args, "DELETE", project, "/keys/old", None)?
            );
            Ok(())
        }
        ["project", "show", project] => {
            println!("{}", config_call(&args, "GET", project, "", None)?);
            Ok(())
        }
        ["token", project] => {
            println!("{}", mint(&args, project)?);
            Ok(())
        }
        ["tail", target] => tail(&args, &format!("/v1/stream/{target}")),
        ["tail"] => match args.get("store") {
            Some(store) => {
                let encoded = percent_encoding::utf8_percent_encode(
                    store,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                tail(&args, &format!("/v1/livestore/{encoded}"))
            }
            None => Err("tail needs <project>/<stream> or --store <storeId> (see --help)".into()),
        },
        _ => Err(format!(
            "unknown command `{}` (see --help)",
            command.join(" ")
        )),
    }
}

/// 32 random bytes, base64url: a signing secret.
fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A config API call with the admin secret (or `--token`); the answer's body.
fn config_call(
    args: &Args,
    method: &str,
    project: &str,
    suffix: &str,
    body: Option<serde_json::Value>,
) -> Result<String, String> {
    let credential = args
        .option_or_env("admin-secret", "ADMIN_SECRET")
        .or_else(|| args.option_or_env("token", "LIVESTORE_SYNC_TOKEN"))
        .ok_or("the config API needs --admin-secret (or ADMIN_SECRET) or a manage --token")?;
    let url = format!("{}/v1/config/{project}{suffix}", args.url());
    let request = ureq::request(method, &url).set("authorization", &format!("Bearer {credential}"));
    let response = match body {
        Some(body) => request
            .set("content-type", "application/json")
            .send_string(&body.to_string()),
        None => request.call(),
    };
    answer(response)
}

/// The body of a successful answer; the server's `{"code", "error"}` otherwise.
fn answer(response: Result<ureq::Response, ureq::Error>) -> Result<String, String> {
    match response {
        Ok(response) => response.into_string().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(status, response)) => {
            let text = response.into_string().unwrap_or_default();
            Err(format!("HTTP {status}: {text}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn now() -> Result<u64, String> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|e| e.to_string())
}

/// `30s`, `15m`, `2h`, `7d` or plain seconds.
fn parse_ttl(ttl: &str) -> Result<u64, String> {
    let (number, unit) = match ttl.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&ttl[..i], c),
        _ => (ttl, 's'),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("--ttl {ttl}: a number with s, m, h or d"))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("--ttl {ttl}: the unit is s, m, h or d")),
    };
    Ok(n.saturating_mul(unit))
}

fn mint(args: &Args, project: &str) -> Result<String, String> {
    let secret = args
        .get("secret")
        .map(str::to_owned)
        .or_else(|| std::env::var("LIVESTORE_SYNC_SECRET").ok())
        .ok_or("token needs --secret <a signing secret of the project>")?;
    let scope = match args.get("scope").unwrap_or("read") {
        "read" => Scope::Read,
        "write" => Scope::Write,
        "manage" => Scope::Manage,
        other => return Err(format!("--scope {other}: read, write or manage")),
    };
    let issued = now()?;
    let claims = Claims {
        sub: project.to_owned(),
        scope,
        exp: issued.saturating_add(parse_ttl(args.get("ttl").unwrap_or("1h"))?),
        nbf: None,
        iat: Some(issued),
        stream_id: args.get("stream").map(str::to_owned),
        store: args.get("store").map(str::to_owned),
    };
    sign(&claims, &secret).ok_or_else(|| "could not sign".to_owned())
}

/// Follows `path` with SSE from `--offset` (default: the start), printing each message as
/// indented JSON; reconnects from where it stopped when the server ends the event stream.
fn tail(args: &Args, path: &str) -> Result<(), String> {
    let token = args.option_or_env("token", "LIVESTORE_SYNC_TOKEN");
    let limit: Option<usize> = match args.get("limit") {
        Some(n) => Some(n.parse().map_err(|_| format!("--limit {n}: a number"))?),
        None => None,
    };
    let mut offset = args.get("offset").unwrap_or("-1").to_owned();
    let mut printed = 0usize;
    let out = std::io::stdout();
    loop {
        let mut url = format!("{}{path}?offset={offset}&live=sse", args.url());
        // A store's stream takes the token as the sync payload, as sync does.
        if path.starts_with("/v1/livestore/") {
            if let Some(token) = &token {
                let payload = serde_json::json!({ "authToken": token }).to_string();
                let encoded = percent_encoding::utf8_percent_encode(
                    &payload,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                url.push_str(&format!("&payload={encoded}"));
            }
        }
        let mut request = ureq::get(&url);
        if let Some(token) = &token {
            request = request.set("authorization", &format!("Bearer {token}"));
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                return Err(format!("HTTP {status}: {text}"));
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut event = String::new();
        let mut data = String::new();
        for line in BufReader::new(response.into_reader()).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(chunk) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(chunk.strip_prefix(' ').unwrap_or(chunk));
            } else if line.is_empty() && !data.is_empty() {
                let text = std::mem::take(&mut data);
                if event == "control" {
                    if let Ok(control) = serde_json::from_str::<serde_json::Value>(&text) {
                        if let Some(next) = control["streamNextOffset"].as_str() {
                            offset = next.to_owned();
                        }
                        if control["streamClosed"] == true {
                            return Ok(());
                        }
                    }
                } else if event == "data" {
                    let messages = match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(serde_json::Value::Array(messages)) => messages,
                        Ok(other) => vec![other],
                        Err(_) => vec![serde_json::Value::String(text)],
                    };
                    let mut out = out.lock();
                    for message in messages {
                        let pretty = serde_json::to_string_pretty(&message)
                            .unwrap_or_else(|_| message.to_string());
                        writeln!(out, "{pretty}").map_err(|e| e.to_string())?;
                        printed += 1;
                        if limit.is_some_and(|limit| printed >= limit) {
                            return out.flush().map_err(|e| e.to_string());
                        }
                    }
                    out.flush().map_err(|e| e.to_string())?;
                }
                event.clear();
            }
        }
        // The server ended the event stream (it does so every minute or so): go on from there.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livestore_sync_rs::auth::token::verify;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("2h"), Ok(7_200));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("1w").is_err() && parse_ttl("h").is_err());
    }

    #[test]
    fn minted_tokens_verify_with_their_claims() {
        let args = Args::parse(
            [
                "--secret",
                "s3cret-s3cret-s3cret-s3cret-s3cret",
                "--scope",
                "write",
                "--stream",
                "orders",
                "--ttl",
                "10m",
            ]
            .map(String::from)
            .to_vec(),
        );
        let token = mint(&args, "my-app").unwrap();
        let claims = verify(
            &token,
            &["s3cret-s3cret-s3cret-s3cret-s3cret".to_owned()],
            now().unwrap(),
        )
        .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.scope),
            ("my-app", Scope::Write)
        );
        assert_eq!(claims.stream_id.as_deref(), Some("orders"));
        assert!(claims.exp > now().unwrap() + 500);
    }

    #[test]
    fn flags_and_options() {
        let args = Args::parse(
            ["project", "create", "p", "--public", "--url", "http://x/"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(args.positional, ["project", "create", "p"]);
        assert_eq!(args.get("public"), Some("true"));
        assert_eq!(args.url(), "http://x");
    }
}
