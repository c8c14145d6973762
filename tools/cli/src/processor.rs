//! `silt processor ...`: the processor lifecycle, module signing and key generation.

use std::path::{Path, PathBuf};

use crate::output::time_rfc3339;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use silt_client::{Client, Deployment, ProcessorInfo, ProcessorLimits, ProcessorState, ProcessorVersion};
use silt_wire::signature;

#[derive(Debug, Subcommand)]
pub enum ProcessorCommand {
    /// Deploy a WebAssembly module (.wasm, or .wat text) as a new processor, or as a new
    /// version of an existing one. The output topic is created with the input's partition
    /// count when it does not exist.
    ///
    /// With `--tier bridge` the bridges run it instead, on the device readings of the input
    /// topic before they are appended, and what it returns is appended there in their place
    /// (no `--output`); its state is checkpointed with the bridges' journaled rounds.
    Deploy(DeployArgs),
    /// List processors with their state, lag and module counters (`--tier bridge`: those the
    /// bridges run).
    List {
        #[arg(long, value_enum, default_value = "broker")]
        tier: Tier,
    },
    /// Show a processor's state, version, lag, events in / out, its module's counters and
    /// last error.
    Status { name: String },
    /// List a processor's deployed versions.
    Versions { name: String },
    /// Make the previous version active again (atomically; it continues from the current
    /// checkpoints with fresh state).
    Rollback { name: String },
    /// Stop a processor; it keeps its checkpoints.
    Pause { name: String },
    /// Start a paused or failed processor again from its last commit.
    Resume { name: String },
    /// Stop and remove a processor and its checkpoints (its output topic stays); with `--tier
    /// bridge`, one the bridges run (they stop at their next look, within seconds).
    Undeploy {
        name: String,
        #[arg(long, value_enum, default_value = "broker")]
        tier: Tier,
    },
    /// Sign a module with an Ed25519 key (adds a `silt.signature` custom section; see
    /// docs/processor-abi.md). Works offline.
    Sign(SignArgs),
    /// Create an Ed25519 key pair for signing: writes the secret key (hex) to FILE and prints
    /// the public key to list under `[processors] trusted_keys` in the broker config.
    Keygen {
        /// Where to write the secret key (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The module: a .wasm file built for wasm32-unknown-unknown, or a .wat text file.
    file: PathBuf,
    /// Processor name (letters, digits, '.', '_' and '-').
    #[arg(long)]
    name: String,
    /// Input topic.
    #[arg(long)]
    input: String,
    /// Output topic (not for `--tier bridge`, whose output replaces its input).
    #[arg(long, required_unless_present = "tier")]
    output: Option<String>,
    /// Where it runs: in the broker, or in the bridges, on device readings before they are
    /// appended.
    #[arg(long, value_enum)]
    tier: Option<Tier>,
    /// A parameter for the module's silt_init, as key=value; repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Where this version starts reading: earliest, latest, an offset or an RFC 3339 time.
    /// Default: earliest for a new processor; for a new version of an existing one, where
    /// the previous version stopped.
    #[arg(long)]
    from: Option<String>,
    /// Linear memory this processor may use, in bytes (default and maximum: the broker's
    /// `[processors] memory_bytes_max`, 64 MiB unless configured).
    #[arg(long, value_name = "BYTES")]
    memory_max: Option<u64>,
    /// Time one batch may take, in milliseconds (default and maximum: the broker's
    /// `call_time_ms_max`, 1000 unless configured).
    #[arg(long, value_name = "MS")]
    time_limit_ms: Option<u64>,
    /// Output bytes one input batch may produce (default and maximum: the broker's
    /// `output_bytes_max`, just under 8 MiB).
    #[arg(long, value_name = "BYTES")]
    output_max: Option<u64>,
}

/// Where a processor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    Broker,
    Bridge,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The module to sign (.wasm or .wat).
    file: PathBuf,
    /// Secret key file written by `silt processor keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Write the signed module here instead of replacing FILE (a .wat input is always
    /// written as .wasm beside it unless this is given).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Parses `key=value`.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Reads a module: binary as is, `.wat` text compiled to binary.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "wat") {
        return wat::parse_bytes(&bytes)
            .map(|b| b.into_owned())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    Ok(bytes)
}

fn read_secret_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    signature::parse_key_hex(&text).with_context(|| {
        format!("{} is not a secret key (64 hex digits, as `silt processor keygen` writes)", path.display())
    })
}

/// Commands that need no broker.
pub fn run_offline(cmd: &ProcessorCommand, json: bool) -> Option<anyhow::Result<()>> {
    match cmd {
        ProcessorCommand::Sign(args) => Some(sign(args, json)),
        ProcessorCommand::Keygen { out } => Some(keygen(out, json)),
        _ => None,
    }
}

fn sign(args: &SignArgs, json: bool) -> anyhow::Result<()> {
    let wasm = read_module(&args.file)?;
    let secret = read_secret_key(&args.key)?;
    let signed =
        signature::sign(&wasm, &secret).with_context(|| format!("signing {}", args.file.display()))?;
    let out = match (&args.output, args.file.extension().is_some_and(|e| e == "wat")) {
        (Some(o), _) => o.clone(),
        (None, true) => args.file.with_extension("wasm"),
        (None, false) => args.file.clone(),
    };
    std::fs::write(&out, &signed).with_context(|| format!("writing {}", out.display()))?;
    let public = signature::hex(&signature::public_key(&secret));
    if json {
        println!("{}", serde_json::json!({ "signed": out, "public_key": public, "bytes": signed.len() }));
    } else {
        println!("signed {} with key {public}", out.display());
    }
    Ok(())
}

fn keygen(out: &Path, json: bool) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("reading /dev/urandom")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    writeln!(file, "{}", signature::hex(&secret)).with_context(|| format!("writing {}", out.display()))?;
    let public = signature::hex(&signature::public_key(&secret));
    if json {
        println!("{}", serde_json::json!({ "secret_key_file": out, "public_key": public }));
    } else {
        println!("{public}");
        eprintln!(
            "secret key written to {}; add the public key above to the broker's [processors] trusted_keys",
            out.display()
        );
    }
    Ok(())
}

fn bridge_json(p: &silt_wire::BridgeProcessorInfo) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "tier": "bridge",
        "topic": p.topic,
        "version": p.version,
        "versions": p.versions,
        "module_sha256": p.module_sha256,
        "module_bytes": p.module_bytes,
        "params": p.params.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "deployed_ms": p.deployed_ms,
        "signed_by": p.signed_by,
    })
}

pub async fn run(client: &Client, cmd: ProcessorCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ProcessorCommand::Deploy(args) if args.tier == Some(Tier::Bridge) => {
            let wasm = read_module(&args.file)?;
            let unused = [
                (args.output.as_ref().is_some_and(|o| *o != args.input), "--output"),
                (args.from.is_some(), "--from"),
                (
                    args.memory_max.is_some() || args.time_limit_ms.is_some() || args.output_max.is_some(),
                    "limits",
                ),
            ];
            if let Some((_, what)) = unused.iter().find(|(given, _)| *given) {
                anyhow::bail!("{what}: not for --tier bridge (its output replaces its input; the bridges run it under the default limits)");
            }
            let info = client.deploy_bridge_processor(&args.name, &args.input, args.params, wasm).await?;
            if json {
                println!("{}", bridge_json(&info));
            } else {
                println!("deployed {} version {} to the bridges: on {}", info.name, info.version, info.topic);
            }
        }
        ProcessorCommand::Deploy(args) => {
            let output = args.output.context("--output is required")?;
            let wasm = read_module(&args.file)?;
            let from = args.from.as_deref().map(crate::parse_from).transpose()?;
            let d = Deployment {
                name: args.name,
                input: args.input,
                output,
                params: args.params,
                from,
                limits: ProcessorLimits {
                    memory_bytes_max: args.memory_max,
                    call_time_ms_max: args.time_limit_ms,
                    output_bytes_max: args.output_max,
                },
            };
            let info = client.deploy_processor(d, wasm).await?;
            if json {
                println!("{}", info_json(&info));
            } else {
                println!(
                    "deployed {} version {}: {} -> {} ({})",
                    info.name,
                    info.version,
                    info.input,
                    info.output,
                    state_name(info.state)
                );
            }
        }
        ProcessorCommand::List { tier: Tier::Bridge } => {
            let list = client.list_bridge_processors().await?;
            if json {
                println!("{}", serde_json::Value::Array(list.iter().map(bridge_json).collect()));
            } else if list.is_empty() {
                println!("no bridge-tier processors");
            } else {
                for p in &list {
                    let params: Vec<String> = p.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("{}\tversion {}\ton {}\t{}", p.name, p.version, p.topic, params.join(" "));
                }
            }
        }
        ProcessorCommand::List { tier: Tier::Broker } => {
            let list = client.list_processors().await?;
            if json {
                println!("{}", serde_json::Value::Array(list.iter().map(info_json).collect()));
            } else if list.is_empty() {
                println!("no processors");
            } else {
                for p in &list {
                    // The module's counters, when it reports any, as a last column.
                    let counters = if p.counters.is_empty() {
                        String::new()
                    } else {
                        format!("\tcounters: {}", counters_text(&p.counters))
                    };
                    println!(
                        "{}\t{}\tv{}\t{} -> {}\tlag {}{counters}",
                        p.name,
                        state_name(p.state),
                        p.version,
                        p.input,
                        p.output,
                        p.lag
                    );
                }
            }
        }
        ProcessorCommand::Status { name } => print_info(&client.processor_status(&name).await?, json),
        ProcessorCommand::Versions { name } => {
            let versions = client.processor_versions(&name).await?;
            if json {
                println!("{}", serde_json::Value::Array(versions.iter().map(version_json).collect()));
            } else {
                for v in &versions {
                    let params: Vec<String> = v.params.iter().map(|(k, val)| format!("{k}={val}")).collect();
                    println!(
                        "{}v{}\t{}\t{} bytes\tsha256 {}\t{}{}{}",
                        if v.active { "* " } else { "  " },
                        v.version,
                        time_rfc3339(v.deployed_ms),
                        v.module_bytes,
                        &v.module_sha256[..16],
                        if params.is_empty() { "no params".to_string() } else { params.join(" ") },
                        v.signed_by.as_ref().map(|k| format!("\tsigned by {}", &k[..16])).unwrap_or_default(),
                        v.deployed_by.as_ref().map(|p| format!("\tby {p}")).unwrap_or_default()
                    );
                }
            }
        }
        ProcessorCommand::Rollback { name } => {
            let info = client.rollback_processor(&name).await?;
            if json {
                println!("{}", info_json(&info));
            } else {
                println!("{} rolled back to version {}", info.name, info.version);
            }
        }
        ProcessorCommand::Pause { name } => {
            let info = client.pause_processor(&name).await?;
            if json {
                println!("{}", info_json(&info));
            } else {
                println!("{} paused at version {}", info.name, info.version);
            }
        }
        ProcessorCommand::Resume { name } => {
            let info = client.resume_processor(&name).await?;
            if json {
                println!("{}", info_json(&info));
            } else {
                println!("{} resumed at version {}", info.name, info.version);
            }
        }
        ProcessorCommand::Undeploy { name, tier } => {
            match tier {
                Tier::Broker => client.undeploy_processor(&name).await?,
                Tier::Bridge => client.undeploy_bridge_processor(&name).await?,
            }
            if json {
                println!("{}", serde_json::json!({ "undeployed": name }));
            } else {
                println!("undeployed {name}");
            }
        }
        ProcessorCommand::Sign(_) | ProcessorCommand::Keygen { .. } => {
            bail!("handled offline")
        }
    }
    Ok(())
}

fn state_name(s: ProcessorState) -> &'static str {
    match s {
        ProcessorState::Running => "running",
        ProcessorState::Paused => "paused",
        ProcessorState::Failed => "failed",
    }
}

fn info_json(p: &ProcessorInfo) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "input": p.input,
        "output": p.output,
        "state": state_name(p.state),
        "version": p.version,
        "versions": p.versions,
        "error": p.error,
        "lag": p.lag,
        "events_in": p.events_in,
        "events_out": p.events_out,
        "counters": counters_json(&p.counters),
        "partitions": p.partitions.iter().map(|q| serde_json::json!({
            "partition": q.partition,
            "checkpoint": q.checkpoint,
            "high_watermark": q.high_watermark,
            "events_in": q.events_in,
            "events_out": q.events_out,
            "counters": counters_json(&q.counters),
        })).collect::<Vec<_>>(),
    })
}

/// A module's counters as a JSON object from name to value (names are unique).
fn counters_json(counters: &[(String, u64)]) -> serde_json::Value {
    counters.iter().map(|(name, value)| (name.clone(), serde_json::Value::from(*value))).collect()
}

/// `name 3, other 0`, or `none`.
fn counters_text(counters: &[(String, u64)]) -> String {
    if counters.is_empty() {
        return "none".into();
    }
    counters.iter().map(|(name, value)| format!("{name} {value}")).collect::<Vec<_>>().join(", ")
}

fn version_json(v: &ProcessorVersion) -> serde_json::Value {
    serde_json::json!({
        "version": v.version,
        "active": v.active,
        "module_sha256": v.module_sha256,
        "module_bytes": v.module_bytes,
        "params": v.params.iter().map(|(k, val)| (k.clone(), serde_json::Value::String(val.clone()))).collect::<serde_json::Map<_, _>>(),
        "deployed_ms": v.deployed_ms,
        "signed_by": v.signed_by,
        "deployed_by": v.deployed_by,
        "limits": {
            "memory_bytes_max": v.limits.memory_bytes_max,
            "call_time_ms_max": v.limits.call_time_ms_max,
            "output_bytes_max": v.limits.output_bytes_max,
        },
    })
}

fn print_info(p: &ProcessorInfo, json: bool) {
    if json {
        println!("{}", info_json(p));
        return;
    }
    println!("processor {}: {}, version {} ({} kept)", p.name, state_name(p.state), p.version, p.versions);
    println!("  {} -> {}", p.input, p.output);
    println!("  lag {}  events in {}  events out {}", p.lag, p.events_in, p.events_out);
    println!("  counters: {}", counters_text(&p.counters));
    if let Some(e) = &p.error {
        println!("  error: {e}");
    }
    println!(
        "  {:>9} {:>14} {:>14} {:>12} {:>12}  counters",
        "partition", "checkpoint", "high mark", "in", "out"
    );
    for q in &p.partitions {
        println!(
            "  {:>9} {:>14} {:>14} {:>12} {:>12}  {}",
            q.partition,
            q.checkpoint,
            q.high_watermark,
            q.events_in,
            q.events_out,
            counters_text(&q.counters)
        );
    }
}
