//! `silt-broker cluster-init`: the data directories of a new cluster's brokers, each with its
//! certificate from one new CA and the admin token they share.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use silt_broker::cluster::CLUSTER_DIR;

/// Prepare the data directories of a new cluster: DIR/node-1 .. DIR/node-N.
///
/// Makes a certificate authority (DIR/ca.pem; its key is not kept, so no certificate can be
/// added to the cluster later without a new one) and a certificate for each broker, signed by
/// it, in DATA_DIR/cluster/ (ca.pem, cert.pem, key.pem): brokers check each other's (mTLS)
/// and clients trust DIR/ca.pem. Writes one admin token to DIR/admin.token and to each
/// DATA_DIR/admin.token, which each broker adopts on its first start, so one token works on
/// every broker.
///
/// Then start broker I with --data-dir DIR/node-I --node-id I --cluster-listen HOST:PORT and
/// the same --peers list on each; scripts/cluster-local.sh does all of it on loopback.
///
/// Exit codes: 0 when done; 1 when a directory already holds a broker's data or a file could
/// not be written; 2 for bad arguments.
#[derive(Debug, Args)]
pub struct ClusterInitArgs {
    /// Directory to create the brokers' data directories in.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// How many brokers: their node ids are 1 to N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    nodes: u64,
    /// Another name or address clients reach the brokers by, for their certificates (besides
    /// localhost and the loopback addresses); repeat it for several.
    #[arg(long, value_name = "NAME")]
    san: Vec<String>,
}

pub fn main(args: ClusterInitArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-broker cluster-init: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ClusterInitArgs) -> anyhow::Result<()> {
    let ids: Vec<u64> = (1..=args.nodes).collect();
    for id in &ids {
        let data = args.dir.join(format!("node-{id}"));
        anyhow::ensure!(
            !data.join("db").exists() && !data.join(CLUSTER_DIR).exists(),
            "{} already holds a broker's data; give an empty directory",
            data.display()
        );
    }
    let certs = args.dir.join("certs");
    let files = silt_tls::make_cluster(&certs, &ids, &args.san)?;
    let token = silt_broker::auth::new_token()?;
    silt_broker::auth::write_secret(&args.dir.join("admin.token"), &token)?;
    std::fs::copy(certs.join("ca.pem"), args.dir.join("ca.pem")).context("copying ca.pem")?;
    for (id, node) in ids.iter().zip(&files) {
        let data = args.dir.join(format!("node-{id}"));
        let cluster = data.join(CLUSTER_DIR);
        std::fs::create_dir_all(&cluster).with_context(|| format!("creating {}", cluster.display()))?;
        std::fs::copy(certs.join("ca.pem"), cluster.join("ca.pem")).context("copying ca.pem")?;
        std::fs::rename(&node.cert, cluster.join("cert.pem")).context("moving a certificate")?;
        std::fs::rename(&node.key, cluster.join("key.pem")).context("moving a key")?;
        silt_broker::auth::write_secret(&data.join(silt_broker::auth::ADMIN_TOKEN_FILE), &token)?;
    }
    std::fs::remove_dir_all(&certs).context("removing the staging directory")?;
    println!(
        "{} brokers prepared in {}; clients trust {}",
        ids.len(),
        args.dir.display(),
        args.dir.join("ca.pem").display()
    );
    Ok(())
}
