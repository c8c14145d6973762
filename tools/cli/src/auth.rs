//! `silt user`, `silt token`, `silt acl`, `silt whoami` and `silt audit`.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use silt_client::{AclEntry, Client, Consumer, ConsumerConfig, FetchFrom, Operation, TokenInfo};

use crate::output::time_rfc3339;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; its password is read from stdin (one line).
    Add {
        name: String,
        /// Read the password from stdin (the only way: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Remove a user with its tokens and access-control entries.
    Remove { name: String },
    /// Set a user's password, read from stdin (one line).
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (shown this once; the broker keeps only a
    /// hash). Clients pass it with --token or SILT_TOKEN.
    Create {
        /// The user whose rights the token carries (default: the caller).
        #[arg(long)]
        user: Option<String>,
        /// A name to tell tokens apart.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Expire after this long (e.g. 30d, 12h); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List tokens (of one user, or of every user).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id (the part after `silt_`); connections using it lose their
    /// rights at their next request.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, forbid) PRINCIPAL to do OPERATION on RESOURCE.
    ///
    /// PRINCIPAL: user:NAME, device:ID, or a pattern (user:*, device:*).
    /// OPERATION: produce consume commit create-topic delete-topic alter-topic deploy
    /// manage-processors manage-devices device-keys manage-auth describe audit all.
    /// RESOURCE: topic:NAME, topic:PREFIX*, group:NAME, processor:NAME, device:ID, user:NAME,
    /// or * (anything). In entries of device principals, {id} stands for the device's id.
    /// Deny wins over allow; nothing is allowed without an entry.
    Grant {
        principal: String,
        operation: String,
        resource: String,
        /// A deny entry instead of an allow entry.
        #[arg(long)]
        deny: bool,
    },
    /// Remove an entry (the same four fields as it was granted with).
    Revoke {
        principal: String,
        operation: String,
        resource: String,
        #[arg(long)]
        deny: bool,
    },
    /// List entries (of principals matching --principal, or all).
    List {
        #[arg(long)]
        principal: Option<String>,
    },
}

fn entry(principal: String, operation: &str, resource: String, deny: bool) -> anyhow::Result<AclEntry> {
    let operation = Operation::parse(operation).map_err(anyhow::Error::msg)?;
    let entry = AclEntry { principal, operation, resource, allow: !deny };
    silt_wire::auth::check_entry(&entry).map_err(anyhow::Error::msg)?;
    Ok(entry)
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password on stdin");
    }
    Ok(password)
}

pub async fn user(client: &Client, cmd: UserCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name, .. } => {
            let u = client.add_user(&name, &read_password()?).await?;
            if json {
                println!("{}", serde_json::json!({ "user": u.name, "created": time_rfc3339(u.created_ms) }));
            } else {
                println!("created user {}", u.name);
            }
        }
        UserCommand::List => {
            let users = client.list_users().await?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({ "user": u.name, "created": time_rfc3339(u.created_ms) }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for u in users {
                    println!("{}\tcreated {}", u.name, time_rfc3339(u.created_ms));
                }
            }
        }
        UserCommand::Remove { name } => {
            client.remove_user(&name).await?;
            done(json, "removed user", &name);
        }
        UserCommand::Passwd { name, .. } => {
            client.set_password(&name, &read_password()?).await?;
            done(json, "set the password of", &name);
        }
    }
    Ok(())
}

fn done(json: bool, what: &str, name: &str) {
    if json {
        println!("{}", serde_json::json!({ "done": what, "name": name }));
    } else {
        println!("{what} {name}");
    }
}

fn token_json(t: &TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "name": t.name,
        "user": t.user,
        "created": time_rfc3339(t.created_ms),
        "expires": t.expires_ms.map(time_rfc3339),
        "revoked": t.revoked_ms.map(time_rfc3339),
    })
}

pub async fn token(client: &Client, cmd: TokenCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { user, name, expires } => {
            let user = match user {
                Some(u) => u,
                None => match client.whoami().await?.principal.strip_prefix("user:") {
                    Some(u) => u.to_string(),
                    None => bail!("only users have tokens; pass --user NAME"),
                },
            };
            let (info, secret) =
                client.create_token(&user, &name, expires.map(|d| d.as_millis() as u64)).await?;
            if json {
                let mut v = token_json(&info);
                v["token"] = secret.into();
                println!("{v}");
            } else {
                eprintln!("token {} for user {} (shown once; keep it secret):", info.id, info.user);
                println!("{secret}");
            }
        }
        TokenCommand::List { user } => {
            let tokens = client.list_tokens(user.as_deref()).await?;
            if json {
                println!("{}", serde_json::Value::Array(tokens.iter().map(token_json).collect()));
            } else {
                for t in tokens {
                    let state = match (t.revoked_ms, t.expires_ms) {
                        (Some(r), _) => format!("revoked {}", time_rfc3339(r)),
                        (None, Some(e)) => format!("expires {}", time_rfc3339(e)),
                        (None, None) => "no expiry".into(),
                    };
                    println!("{}\t{}\tuser {}\t{state}", t.id, t.name, t.user);
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let t = client.revoke_token(&id).await?;
            if json {
                println!("{}", token_json(&t));
            } else {
                println!("revoked token {} of user {}", t.id, t.user);
            }
        }
    }
    Ok(())
}

fn entry_json(e: &AclEntry) -> serde_json::Value {
    serde_json::json!({
        "principal": e.principal,
        "operation": e.operation.name(),
        "resource": e.resource,
        "permission": e.permission(),
    })
}

fn print_entries(entries: &[AclEntry], json: bool) {
    if json {
        println!("{}", serde_json::Value::Array(entries.iter().map(entry_json).collect()));
    } else {
        for e in entries {
            println!("{}\t{}\t{}\t{}", e.permission(), e.principal, e.operation, e.resource);
        }
    }
}

pub async fn acl(client: &Client, cmd: AclCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Grant { principal, operation, resource, deny } => {
            let e = entry(principal, &operation, resource, deny)?;
            client.grant_acl(e.clone()).await?;
            if json {
                println!("{}", entry_json(&e));
            } else {
                println!("granted: {e}");
            }
        }
        AclCommand::Revoke { principal, operation, resource, deny } => {
            let e = entry(principal, &operation, resource, deny)?;
            client.revoke_acl(e.clone()).await?;
            if json {
                println!("{}", entry_json(&e));
            } else {
                println!("revoked: {e}");
            }
        }
        AclCommand::List { principal } => print_entries(&client.list_acls(principal.as_deref()).await?, json),
    }
    Ok(())
}

pub async fn whoami(client: &Client, json: bool) -> anyhow::Result<()> {
    let w = client.whoami().await?;
    if json {
        let entries: Vec<_> = w.entries.iter().map(entry_json).collect();
        println!(
            "{}",
            serde_json::json!({ "principal": w.principal, "method": w.method, "entries": entries })
        );
    } else {
        println!("{} (by {})", w.principal, w.method);
        print_entries(&w.entries, false);
    }
    Ok(())
}

/// Reads the audit topic from `since` ago to its end, keeping events of `principal`.
pub async fn audit(
    client: &Client,
    since: Option<Duration>,
    principal: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let from = match since {
        Some(d) => FetchFrom::Timestamp(
            silt_wire::time::unix_ms(std::time::SystemTime::now()) - d.as_millis() as i64,
        ),
        None => FetchFrom::Earliest,
    };
    let config = ConsumerConfig { from, follow: false, ..Default::default() };
    let mut consumer = Consumer::new(client, "silt.audit", config).await?;
    while let Some(fetched) = consumer.next_batch().await {
        let fetched = fetched?;
        for r in fetched.records() {
            let r = r?;
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(r.value) else { continue };
            if principal.as_ref().is_some_and(|p| event["principal"].as_str() != Some(p.as_str())) {
                continue;
            }
            if json {
                println!("{event}");
            } else {
                let s = |k: &str| event[k].as_str().unwrap_or("").to_string();
                let time = event["time_ms"].as_i64().map(time_rfc3339).unwrap_or_default();
                println!(
                    "{time} {:<7} {} {} {} {} {}",
                    s("outcome"),
                    s("principal"),
                    s("source"),
                    s("operation"),
                    s("resource"),
                    s("detail")
                );
            }
        }
    }
    Ok(())
}
