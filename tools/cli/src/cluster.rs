//! `silt cluster`: the brokers of a cluster and every partition's leader and replicas.

use clap::Subcommand;
use silt_client::Client;
use silt_wire::ClusterInfo;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the brokers (up or down, as the broker answering sees them) and each partition's
    /// leader, replicas and last committed entry. With --json: an object with `node_id` (the
    /// broker that answered), `nodes` (`id`, `state`, `client_address`, `cluster_address`,
    /// `metadata_leader`) and `partitions` (`topic`, `partition`, `leader`, `replicas`,
    /// `committed`); `leader` is null while a partition has none.
    Status,
}

pub async fn run(client: &Client, cmd: ClusterCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status => {
            let info = client.cluster_status().await?;
            if json {
                println!("{}", status_json(&info));
            } else {
                print_status(&info);
            }
        }
    }
    Ok(())
}

fn status_json(c: &ClusterInfo) -> serde_json::Value {
    serde_json::json!({
        "node_id": c.node_id,
        "nodes": c.nodes.iter().map(|n| serde_json::json!({
            "id": n.id,
            "state": n.state,
            "client_address": n.client_address,
            "cluster_address": n.cluster_address,
            "metadata_leader": n.metadata_leader,
        })).collect::<Vec<_>>(),
        "partitions": c.partitions.iter().map(|p| serde_json::json!({
            "topic": p.topic,
            "partition": p.partition,
            "leader": p.leader,
            "replicas": p.replicas,
            "committed": p.committed,
        })).collect::<Vec<_>>(),
    })
}

fn print_status(c: &ClusterInfo) {
    println!("{:<6} {:<6} {:<22} {:<22} metadata", "node", "state", "clients", "cluster");
    for n in &c.nodes {
        let here = if n.id == c.node_id { " (answering)" } else { "" };
        println!(
            "{:<6} {:<6} {:<22} {:<22} {}{here}",
            n.id,
            n.state,
            n.client_address.as_deref().unwrap_or("-"),
            n.cluster_address,
            match (n.state.as_str(), n.metadata_leader) {
                ("up", true) => "leader",
                ("up", false) => "follower",
                _ => "-",
            },
        );
    }
    if c.partitions.is_empty() {
        return;
    }
    println!();
    println!("{:<24} {:>9} {:>7} {:<12} committed", "topic", "partition", "leader", "replicas");
    for p in &c.partitions {
        let replicas: Vec<String> = p.replicas.iter().map(u64::to_string).collect();
        println!(
            "{:<24} {:>9} {:>7} {:<12} {}",
            p.topic,
            p.partition,
            p.leader.map_or("-".to_string(), |l| l.to_string()),
            replicas.join(","),
            p.committed.map_or("-".to_string(), |c| c.to_string()),
        );
    }
}
