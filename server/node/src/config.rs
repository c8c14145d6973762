//! The server's configuration file: the broker's keys (read by `silt_broker::config`) and an
//! optional `[bridge]` table, the keys of `silt-bridge --config` files, for a device bridge
//! in this process. The file is parsed once, so that errors in either part point at their
//! line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// The name of the table that configures the embedded bridge.
const BRIDGE_TABLE: &str = "bridge";

/// What the server runs.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub broker: silt_broker::config::Config,
    /// A device bridge to run in this process (the `[bridge]` table); `None`: none. Its broker
    /// address and certificate are the broker's own; its data dir defaults to DATA_DIR/bridge
    /// (an empty path here, resolved once flags have set DATA_DIR).
    pub bridge: Option<silt_bridge::config::Config>,
}

impl ServerConfig {
    /// Defaults overlaid with the file at `path`.
    pub fn from_file(path: &Path) -> anyhow::Result<ServerConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let mut document =
            DeTable::parse(&text).with_context(|| format!("parsing config {}", path.display()))?;
        let bridge = document.get_mut().remove(BRIDGE_TABLE);
        let broker = silt_broker::config::Config::from_document(document, &text, path)?;
        let bridge = bridge.map(|table| bridge_config(table, &text, path)).transpose()?;
        Ok(ServerConfig { broker, bridge })
    }
}

/// The `[bridge]` table as the bridge's configuration, checked as `silt-bridge` checks its own.
fn bridge_config(
    table: Spanned<DeValue<'_>>,
    text: &str,
    path: &Path,
) -> anyhow::Result<silt_bridge::config::Config> {
    let context = || format!("in {}: the [{BRIDGE_TABLE}] table", path.display());
    let explicit_dir = matches!(table.get_ref(), DeValue::Table(t) if t.contains_key("data_dir"));
    let mut bridge = silt_bridge::config::Config::deserialize(ValueDeserializer::from(table))
        .map_err(|mut e| {
            e.set_input(Some(text));
            e
        })
        .with_context(context)?;
    if !explicit_dir {
        bridge.data_dir = PathBuf::new();
    }
    bridge.validate().with_context(context)?;
    Ok(bridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_text(text: &str) -> anyhow::Result<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, text).unwrap();
        ServerConfig::from_file(&path)
    }

    /// The broker's keys go to the broker, the `[bridge]` table to the bridge, whose data dir
    /// is left for `serve` to put under the broker's unless the table names one.
    #[test]
    fn broker_keys_and_bridge_table() {
        let c =
            from_text("listen = \"127.0.0.1:9000\"\n[bridge]\nlisten_tcp = \"127.0.0.1:9001\"\n").unwrap();
        assert_eq!(c.broker.listen.port(), 9000);
        let bridge = c.bridge.expect("a bridge");
        assert_eq!(bridge.listen_tcp, Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(bridge.data_dir, PathBuf::new());
        let c = from_text("[bridge]\ndata_dir = \"/tmp/b\"\n").unwrap();
        assert_eq!(c.bridge.unwrap().data_dir, PathBuf::from("/tmp/b"));
        assert!(from_text("fsync = \"never\"\n").unwrap().bridge.is_none());
    }

    /// Unknown keys fail in either part, and the message points at the line.
    #[test]
    fn errors_point_at_their_line() {
        let e = format!("{:#}", from_text("fsync = \"never\"\n[bridge]\nlisten_tcpp = \"x\"\n").unwrap_err());
        assert!(e.contains("[bridge] table") && e.contains("line 3") && e.contains("listen_tcpp"), "{e}");
        let e = format!("{:#}", from_text("fsync = \"never\"\nlissen = 1\n[bridge]\n").unwrap_err());
        assert!(e.contains("line 2") && e.contains("lissen"), "{e}");
    }
}
