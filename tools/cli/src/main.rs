//! `silt`: the command-line client of the Silt broker. Glue only: argument parsing, output
//! formats and progress; everything that talks to the broker is `silt-client`. It links no
//! server code: `silt demo` runs the server binary's demo (`demo`).

mod auth;
mod cluster;
mod demo;
mod device;
mod output;
mod processor;
mod records;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use silt_client::{Client, ClientConfig, Consumer, ConsumerConfig, FetchFrom, Producer, ProducerConfig};

use crate::output::{print_repair, print_topic, print_topics};
use crate::records::{parse_input_line, InputFormat, OutputFormat, RecordWriter};

/// Command-line client for the Silt broker: topics, produce, consume, replay.
///
/// Credentials: --token or SILT_TOKEN, else --token-file (SILT_TOKEN_FILE), else
/// ./silt-data/admin.token when it exists (the token a broker started here wrote).
///
/// Exit codes: 0 success; 1 the operation failed (unknown topic, unreachable broker, bad
/// input; the message says which); 2 bad command-line arguments; 3 refused by the broker: no
/// credential, a bad, expired or revoked one, or a missing right.
#[derive(Debug, Parser)]
#[command(name = "silt", version)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Connection {
    /// Broker QUIC address; several, comma-separated, are tried in order until one answers.
    #[arg(
        long,
        global = true,
        env = "SILT_BROKER",
        default_value = "127.0.0.1:7400",
        value_name = "HOST:PORT"
    )]
    broker: String,
    /// PEM certificate to trust (the broker's DATA_DIR/tls/cert.pem). Default:
    /// ./silt-data/tls/cert.pem when it exists.
    #[arg(long, global = true, env = "SILT_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// API token to authenticate with (as `silt token create` printed it).
    #[arg(long, global = true, env = "SILT_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token (default: ./silt-data/admin.token when it exists).
    #[arg(long, global = true, env = "SILT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Client certificate (PEM) to authenticate with instead (mTLS); needs --client-key and a
    /// broker whose client_ca signed it.
    #[arg(long, global = true, env = "SILT_CLIENT_CERT", value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, global = true, env = "SILT_CLIENT_KEY", value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Export OpenTelemetry traces over OTLP/HTTP to this endpoint (e.g.
    /// http://127.0.0.1:4318): `consume` opens a span for each record that carries a
    /// `traceparent` header, as a child of the reading's trace.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Append records read one per line from stdin or a file; exits 0 only after every record
    /// is acknowledged (durable).
    Produce(ProduceArgs),
    /// Print records of a topic, one value per line.
    Consume(ConsumeArgs),
    /// Export the records of a time range as JSON lines or CSV.
    Replay(ReplayArgs),
    /// Deploy and manage WebAssembly processors; sign modules.
    #[command(subcommand)]
    Processor(processor::ProcessorCommand),
    /// Register, list and revoke devices (keys for bridge frames and MQTT logins).
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Add, list and remove users; set passwords.
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(auth::TokenCommand),
    /// Grant, revoke and list access-control entries.
    #[command(subcommand)]
    Acl(auth::AclCommand),
    /// Show the cluster: its brokers and every partition's leader and replicas.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Show who the broker takes this client for, and its entries.
    Whoami,
    /// Read the audit trail: logins, changes and refused requests.
    Audit {
        /// Only events of the last DURATION (e.g. 1h, 30m); default: all kept.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Only events of this principal (user:NAME, device:ID, anonymous).
        #[arg(long)]
        principal: Option<String>,
    },
    // Its help is `DemoArgs`'s doc comment (a variant's would replace the long help).
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Drop batches older than this (e.g. 7d, 12h, 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<Duration>,
        /// Drop the oldest batches while a partition holds more bytes than this.
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        /// Brokers that keep each partition, in a cluster (default: 3, or all brokers when
        /// fewer); a produce is acknowledged once most of them have it.
        #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..=7))]
        replication_factor: Option<u32>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions with their watermarks and sizes.
    Describe { name: String },
    /// Delete a topic and all its records.
    Delete { name: String },
    /// Find the acknowledged records of a partition that storage damage destroyed (exit 1
    /// when there are any); with --accept-loss, accept their loss: the damaged batches are
    /// removed, consumers and processors go on after them, produces go on after the last
    /// offset ever acknowledged (no offset is reused). Logged by the broker, audited, and
    /// counted in silt_accepted_loss_records_total.
    Repair {
        name: String,
        #[arg(long, short)]
        partition: u32,
        /// Accept the loss of the damaged records (otherwise only report them).
        #[arg(long)]
        accept_loss: bool,
    },
}

#[derive(Debug, Args)]
struct ProduceArgs {
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Key for every record (records with the same key go to the same partition).
    #[arg(long)]
    key: Option<String>,
    /// Input format: `raw` (each line is a value) or `jsonl` (each line is an object with
    /// "value" and optional "key", "timestamp" (RFC 3339 or ms) and "headers").
    #[arg(long, value_enum, default_value_t = InputFormat::Raw)]
    format: InputFormat,
    /// Write to this partition instead of choosing by key.
    #[arg(long)]
    partition: Option<u32>,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// Compression of each batch (batches that do not shrink are sent as they are).
    /// `lz4` or `none`.
    #[arg(long, default_value = "lz4", value_name = "CODEC")]
    compression: silt_client::Compression,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    topic: String,
    /// Where to start: earliest, latest, an offset, or an RFC 3339 time.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Stop after this many records (waiting for them if needed).
    #[arg(long)]
    count: Option<u64>,
    /// Keep printing new records until interrupted.
    #[arg(long)]
    follow: bool,
    /// Consume as a member of this group, resuming from its committed offsets and committing
    /// what was printed.
    #[arg(long)]
    group: Option<String>,
    /// Only this partition (not with --group: a group assigns partitions itself).
    #[arg(long, conflicts_with = "group")]
    partition: Option<u32>,
    /// Output format: value (the value only), jsonl (one object per record; also what
    /// --json selects), csv.
    #[arg(long, value_enum, default_value_t = OutputFormat::Value)]
    format: OutputFormat,
    /// Apply a deployed processor to what is read (NAME or NAME@VERSION; default: its active
    /// version). The broker runs it over each fetch and returns its output; nothing is stored.
    #[arg(long, value_name = "NAME[@VERSION]")]
    processor: Option<String>,
    /// A parameter for --processor, as key=value, overriding the deployed one; repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "processor", value_parser = processor::parse_param)]
    params: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    topic: String,
    /// Start of the range (inclusive), RFC 3339 (e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    from: String,
    /// End of the range (exclusive), RFC 3339; default: now.
    #[arg(long)]
    to: Option<String>,
    #[arg(long, value_enum, default_value_t = ReplayFormat::Jsonl)]
    format: ReplayFormat,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReplayFormat {
    Jsonl,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo(args) = cli.command {
        let e = demo::exec(args, cli.conn.json);
        eprintln!("silt: {}", one_line(&e));
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    // Without an endpoint the CLI installs no subscriber at all: its output is its own.
    let _telemetry =
        match cli.conn.otlp_endpoint.as_deref().map(|e| silt_telemetry::init("silt", false, Some(e))) {
            Some(Err(e)) => {
                eprintln!("silt: {}", one_line(&e));
                return ExitCode::FAILURE;
            }
            Some(Ok(guard)) => Some(guard),
            None => None,
        };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): not an error of ours.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if is_refusal(&e) => {
            eprintln!("silt: refused: {}", one_line(&e));
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("silt: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A refusal of the broker's: no credential, a bad one, or a missing right.
fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<silt_client::ClientError>().is_some_and(|ce| ce.is_refusal()))
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// One line: the outermost context and the root cause, without repeats.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

async fn connect(conn: &Connection) -> anyhow::Result<Client> {
    let ca = match &conn.ca_cert {
        Some(p) => p.clone(),
        None => {
            let default = Path::new("silt-data/tls/cert.pem");
            if !default.exists() {
                bail!("no CA certificate: pass --ca-cert FILE or set SILT_CA_CERT (the broker writes DATA_DIR/tls/cert.pem)");
            }
            default.to_path_buf()
        }
    };
    let mut config = ClientConfig::new(conn.broker.clone(), &ca)?;
    match (&conn.client_cert, &conn.client_key) {
        (Some(cert), Some(key)) => config = config.with_client_cert(cert, key)?,
        _ => {
            config = config.with_credential(silt_client::token_credential(
                conn.token.as_deref(),
                conn.token_file.as_deref(),
            )?)
        }
    }
    Ok(Client::connect(config).await?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Processor(cmd) = &cli.command {
        if let Some(result) = processor::run_offline(cmd, cli.conn.json) {
            return result;
        }
    }
    let client = connect(&cli.conn).await?;
    let json = cli.conn.json;
    let result = match cli.command {
        Command::Topic(cmd) => topic(&client, cmd, json).await,
        Command::Produce(args) => produce(&client, args, json).await,
        Command::Consume(args) => consume(&client, args, json).await,
        Command::Replay(args) => replay(&client, args, json).await,
        Command::Processor(cmd) => processor::run(&client, cmd, json).await,
        Command::Device(cmd) => device::run(&client, cmd, json).await,
        Command::User(cmd) => auth::user(&client, cmd, json).await,
        Command::Token(cmd) => auth::token(&client, cmd, json).await,
        Command::Acl(cmd) => auth::acl(&client, cmd, json).await,
        Command::Cluster(cmd) => cluster::run(&client, cmd, json).await,
        Command::Whoami => auth::whoami(&client, json).await,
        Command::Audit { since, principal } => auth::audit(&client, since, principal, json).await,
        Command::Demo(_) => unreachable!("handled before the runtime starts"),
    };
    client.close().await;
    result
}

async fn topic(client: &Client, cmd: TopicCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create { name, partitions, retention, retention_bytes, replication_factor } => {
            let retention_ms = retention.map(|d| d.as_millis() as u64);
            let info = client
                .create_topic_replicated(&name, partitions, retention_ms, retention_bytes, replication_factor)
                .await?;
            if json {
                print_topic(&info, true);
            } else {
                println!("created topic {} with {} partition(s)", info.name, info.partitions.len());
            }
        }
        TopicCommand::List => print_topics(&client.list_topics().await?, json),
        TopicCommand::Describe { name } => print_topic(&client.describe_topic(&name).await?, json),
        TopicCommand::Repair { name, partition, accept_loss } => {
            let repair = client.repair_partition(&name, partition, accept_loss).await?;
            print_repair(&repair, json);
            if !repair.damaged.is_empty() && !repair.accepted {
                bail!("{name}/{partition} has damaged records; `--accept-loss` accepts their loss");
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}

async fn produce(client: &Client, args: ProduceArgs, json: bool) -> anyhow::Result<()> {
    let config = ProducerConfig {
        batch_records_max: args.batch_size.max(1),
        compression: args.compression,
        ..Default::default()
    };
    let producer = Producer::new(client, &args.topic, config).await?;
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    // Reading stdin blocks; a thread feeds lines to the async producer in chunks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<String>>>(16);
    std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(1024);
        for line in input.lines() {
            match line {
                Ok(l) => chunk.push(l),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            if chunk.len() == 1024 && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send(Ok(chunk));
    });
    let mut count: u64 = 0;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.context("reading input")?;
        for (i, line) in chunk.iter().enumerate() {
            let rec = parse_input_line(line, args.format, args.key.as_deref())
                .with_context(|| format!("line {}", count + i as u64 + 1))?;
            let headers: Vec<(&[u8], &[u8])> =
                rec.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
            producer
                .send(silt_client::ProducerRecord {
                    key: rec.key.as_deref().map(str::as_bytes),
                    value: &rec.value,
                    timestamp_ms: rec.timestamp_ms,
                    headers: &headers,
                    partition: args.partition,
                })
                .await?;
        }
        count += chunk.len() as u64;
    }
    producer.close().await?;
    if json {
        println!("{}", serde_json::json!({ "topic": args.topic, "acknowledged": count }));
    }
    Ok(())
}

/// `NAME` or `NAME@VERSION`, with parameter overrides.
fn parse_processor_ref(s: &str, params: &[(String, String)]) -> anyhow::Result<silt_client::ProcessorRef> {
    let (name, version) = match s.split_once('@') {
        Some((n, v)) => {
            let v = v.trim_start_matches('v');
            (
                n,
                Some(
                    v.parse::<u32>()
                        .with_context(|| format!("--processor {s:?}: version must be a number"))?,
                ),
            )
        }
        None => (s, None),
    };
    let params = (!params.is_empty()).then(|| params.to_vec());
    Ok(silt_client::ProcessorRef { name: name.to_string(), version, params })
}

pub(crate) fn parse_from(s: &str) -> anyhow::Result<FetchFrom> {
    Ok(match s {
        "earliest" => FetchFrom::Earliest,
        "latest" => FetchFrom::Latest,
        _ => match s.parse::<u64>() {
            Ok(o) => FetchFrom::Offset(o),
            Err(_) => FetchFrom::Timestamp(parse_time(s).with_context(|| {
                format!("--from {s:?} is not earliest, latest, an offset or an RFC 3339 time")
            })?),
        },
    })
}

fn parse_time(s: &str) -> anyhow::Result<i64> {
    let t = humantime::parse_rfc3339_weak(s).with_context(|| format!("{s:?} is not an RFC 3339 time"))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).context("time before 1970")?;
    Ok(d.as_millis() as i64)
}

async fn consume(client: &Client, args: ConsumeArgs, json: bool) -> anyhow::Result<()> {
    let from = parse_from(&args.from)?;
    let follow = args.follow || args.count.is_some();
    let processor = args.processor.as_deref().map(|p| parse_processor_ref(p, &args.params)).transpose()?;
    let config = ConsumerConfig { from, follow, group: args.group.clone(), processor, ..Default::default() };
    let mut consumer = match args.partition {
        Some(p) => Consumer::assign(client, &args.topic, vec![(p, from)], config).await?,
        None => Consumer::new(client, &args.topic, config).await?,
    };
    let stdout = std::io::stdout();
    // --json asks for machine-readable output: one JSON object per record.
    let format =
        if json && matches!(args.format, OutputFormat::Value) { OutputFormat::Jsonl } else { args.format };
    let mut out = RecordWriter::new(std::io::BufWriter::new(stdout.lock()), format, &args.topic);
    let mut printed: u64 = 0;
    // Per partition, the offset after the last record printed: what the group commits at the
    // end, so that a run stopped by --count inside a fetched batch resumes right after it.
    let mut printed_to: std::collections::HashMap<u32, u64> = Default::default();
    let limit = args.count.unwrap_or(u64::MAX);
    'outer: while printed < limit {
        let fetched = match consumer.next_batch().await {
            None => break,
            Some(f) => f?,
        };
        for r in fetched.records() {
            let r = r?;
            let _span = silt_telemetry::enabled()
                .then(|| silt_telemetry::consume_span(&args.topic, fetched.partition, r.offset, r.headers()))
                .flatten();
            out.write(fetched.partition, &r)?;
            printed_to.insert(fetched.partition, r.offset + 1);
            printed += 1;
            if printed >= limit {
                break 'outer;
            }
        }
        if args.follow {
            out.flush()?;
        }
        if args.group.is_some() {
            consumer.commit().await?;
        }
    }
    out.flush()?;
    drop(out);
    if args.group.is_some() {
        // Only partitions still assigned: a revoked one was committed when it was handed over.
        let assigned = consumer.assignment();
        let positions: Vec<(u32, u64)> =
            printed_to.into_iter().filter(|(p, _)| assigned.contains(p)).collect();
        consumer.commit_positions(&positions).await?;
    }
    consumer.close().await;
    Ok(())
}

async fn replay(client: &Client, args: ReplayArgs, json: bool) -> anyhow::Result<()> {
    let from_ms = parse_time(&args.from)?;
    let to_ms = match &args.to {
        Some(t) => parse_time(t)?,
        None => i64::MAX,
    };
    if to_ms <= from_ms {
        bail!("--to must be after --from");
    }
    let info = client.describe_topic(&args.topic).await?;
    let total: u64 = info.partitions.iter().map(|p| p.high_watermark - p.log_start).sum();
    let config = ConsumerConfig { from: FetchFrom::Timestamp(from_ms), follow: false, ..Default::default() };
    let mut consumer = Consumer::new(client, &args.topic, config).await?;
    let sink: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let format = match args.format {
        ReplayFormat::Jsonl => OutputFormat::Jsonl,
        ReplayFormat::Csv => OutputFormat::Csv,
    };
    let mut out = RecordWriter::new(std::io::BufWriter::with_capacity(1 << 20, sink), format, &args.topic);
    let bar = output::progress(
        total,
        args.output.is_some() || !std::io::IsTerminal::is_terminal(&std::io::stdout()),
    );
    let (mut scanned, mut written) = (0u64, 0u64);
    while let Some(fetched) = consumer.next_batch().await {
        let fetched = fetched?;
        for r in fetched.records() {
            let r = r?;
            scanned += 1;
            if r.timestamp_ms >= from_ms && r.timestamp_ms < to_ms {
                out.write(fetched.partition, &r)?;
                written += 1;
            }
        }
        bar.set_position(scanned);
    }
    out.flush()?;
    bar.finish_and_clear();
    if json {
        eprintln!("{}", serde_json::json!({ "records": written, "scanned": scanned }));
    } else if let Some(p) = &args.output {
        eprintln!("wrote {written} records to {}", p.display());
    }
    Ok(())
}
