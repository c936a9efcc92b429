//! presence-server's configuration, in the sectioned model of `city-node run`: a TOML file
//! with `[presence]` (every [`presence::ServerConfig`] key, `[presence.rate_limit]`
//! included) and `[log]`; each key also an environment variable
//! `PRESENCE_SERVER__<SECTION>__<KEY>` and a `--set section.key=value`; the named flags and
//! their `PRESENCE_*` variables (`--port` / `PRESENCE_HTTP_PORT`, …) on top. Layers, lowest
//! first: defaults, file, environment, `--set`, named flags. Each layer is checked on its
//! own, so a bad value is reported with its source and key. A file of the older flat form
//! (ServerConfig keys at the top level) is still read, as `[presence]`, with a warning.
//! (`/metrics` is served on the HTTP port; there is no metrics setting to configure.)

use presence::ServerConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;
use toml::{Table, Value};

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogSection {
    /// `text` or `json`.
    pub(crate) format: LogFormat,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// The presence server.
    pub(crate) presence: ServerConfig,
    /// Logging.
    pub(crate) log: LogSection,
}

/// A configuration error, naming where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read or is not TOML.
    #[error("{source_name}: {message}")]
    Unreadable {
        /// e.g. `file /etc/citychain/presence.toml`.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// One key has a bad value (or is unknown).
    #[error("{source_name}: key `{key}`: {message}")]
    Key {
        /// Where it came from.
        source_name: String,
        /// `section.key`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// One layer of settings and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    source_name: String,
    table: Table,
}

impl Layer {
    /// A layer of `table` from `source_name`.
    pub(crate) fn new(source_name: impl Into<String>, table: Table) -> Self {
        Layer {
            source_name: source_name.into(),
            table,
        }
    }
}

const SECTIONS: [&str; 2] = ["presence", "log"];

/// The file at `path` as a layer (the flat form wrapped into `[presence]`).
pub(crate) fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let source_name = format!("file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        source_name: source_name.clone(),
        message: e.to_string(),
    })?;
    let mut table: Table = toml::from_str(&text).map_err(|e| ConfigError::Unreadable {
        source_name: source_name.clone(),
        message: e.to_string(),
    })?;
    let flat: Vec<String> = table
        .keys()
        .filter(|k| !SECTIONS.contains(&k.as_str()))
        .cloned()
        .collect();
    if !flat.is_empty() {
        // Logging is not set up yet (its format is configured here).
        eprintln!(
            "warning: {}: top-level keys {flat:?} are the old flat form, read as [presence]; move them under [presence]",
            path.display()
        );
        let mut presence = match table.remove("presence") {
            Some(Value::Table(t)) => t,
            _ => Table::new(),
        };
        for k in flat {
            if let Some(v) = table.remove(&k) {
                presence.insert(k, v);
            }
        }
        table.insert("presence".into(), Value::Table(presence));
    }
    Ok(Layer::new(source_name, table))
}

/// A raw string as TOML: a number, boolean, array or table when it parses as one, else a
/// string.
fn typed(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Puts `value` at the dotted `key` of `table`.
fn insert(table: &mut Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        t = match entry {
            Value::Table(inner) => inner,
            _ => unreachable!("just made a table"),
        };
    }
    t.insert(last.to_string(), value);
}

/// The variables `PRESENCE_SERVER__<SECTION>__<KEY>` (`__` between levels) as a layer.
pub(crate) fn env_layer(vars: impl IntoIterator<Item = (String, String)>) -> Layer {
    let mut table = Table::new();
    for (name, raw) in vars {
        if let Some(rest) = name.strip_prefix("PRESENCE_SERVER__") {
            let key = rest.to_ascii_lowercase().replace("__", ".");
            insert(&mut table, &key, typed(&raw));
        }
    }
    Layer::new("environment (PRESENCE_SERVER__*)", table)
}

/// `--set section.key=value` arguments as a layer.
pub(crate) fn set_layer(sets: &[String]) -> Result<Layer, ConfigError> {
    let mut table = Table::new();
    for s in sets {
        let Some((key, raw)) = s.split_once('=') else {
            return Err(ConfigError::Key {
                source_name: "--set".into(),
                key: s.clone(),
                message: "expected section.key=value".into(),
            });
        };
        insert(&mut table, key.trim(), typed(raw.trim()));
    }
    Ok(Layer::new("--set", table))
}

fn merge(into: &mut Table, from: &Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

fn leaves(t: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(inner) if !inner.is_empty() => leaves(inner, &key, out),
            _ => out.push((key, v.clone())),
        }
    }
}

fn defaults() -> Table {
    Table::try_from(FileConfig::default()).unwrap_or_default()
}

/// Checks `layer` alone on the defaults: the first bad key, by name.
fn check(layer: &Layer) -> Result<(), ConfigError> {
    let mut all = defaults();
    merge(&mut all, &layer.table);
    if Value::Table(all).try_into::<FileConfig>().is_ok() {
        return Ok(());
    }
    let mut keys = Vec::new();
    leaves(&layer.table, "", &mut keys);
    for (key, value) in keys {
        let mut one = defaults();
        insert(&mut one, &key, value);
        if let Err(e) = Value::Table(one).try_into::<FileConfig>() {
            return Err(ConfigError::Key {
                source_name: layer.source_name.clone(),
                key,
                // toml appends "in `key`" on a second line: the key is named already.
                message: e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            });
        }
    }
    Err(ConfigError::Unreadable {
        source_name: layer.source_name.clone(),
        message: "the settings do not form a valid configuration".into(),
    })
}

/// Defaults with `layers` applied in order, each checked first.
pub(crate) fn build(layers: &[Layer]) -> Result<FileConfig, ConfigError> {
    let mut all = defaults();
    for l in layers {
        check(l)?;
        merge(&mut all, &l.table);
    }
    Value::Table(all)
        .try_into::<FileConfig>()
        .map_err(|e| ConfigError::Unreadable {
            source_name: "the merged configuration".into(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile_path::Guard, std::path::PathBuf) {
        let g = tempfile_path::Guard::new();
        let p = g.0.join("presence.toml");
        std::fs::write(&p, text).unwrap();
        (g, p)
    }

    /// A scratch directory removed on drop (no tempfile dependency in this binary).
    mod tempfile_path {
        pub(super) struct Guard(pub(super) std::path::PathBuf);
        impl Guard {
            pub(super) fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let d = std::env::temp_dir()
                    .join(format!("presence-server-cfg-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&d).unwrap();
                Guard(d)
            }
        }
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn sections_env_and_set_layer_in_order() {
        let (_g, p) = file(
            "[presence]\nbackend = \"redis\"\nhttp_port = 9000\n[presence.rate_limit]\nburst = 10\n[log]\nformat = \"json\"\n",
        );
        let env = env_layer([
            (
                "PRESENCE_SERVER__PRESENCE__TTL_MS".to_string(),
                "8000".to_string(),
            ),
            (
                "PRESENCE_SERVER__PRESENCE__HTTP_PORT".to_string(),
                "9050".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ]);
        let set = set_layer(&["presence.http_port=9100".to_string()]).unwrap();
        let c = build(&[file_layer(&p).unwrap(), env, set]).unwrap();
        assert_eq!(c.presence.backend, presence::BackendKind::Redis);
        assert_eq!(c.presence.http_port, 9100);
        assert_eq!(c.presence.ttl_ms, 8000);
        assert_eq!(c.presence.rate_limit.burst, 10);
        assert_eq!(c.presence.rate_limit.per_second, 30);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_source_and_the_key() {
        let (_g, p) = file("[presence]\nttl_ms = \"soon\"\n");
        let e = build(&[file_layer(&p).unwrap()]).unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("`presence.ttl_ms`"),
            "{e}"
        );
        let env = env_layer([(
            "PRESENCE_SERVER__PRESENCE__HTTP_PORT".to_string(),
            "99999".to_string(),
        )]);
        let e = build(&[env]).unwrap_err().to_string();
        assert!(
            e.contains("PRESENCE_SERVER__") && e.contains("`presence.http_port`"),
            "{e}"
        );
        let e = build(&[set_layer(&["log.colour=red".to_string()]).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set") && e.contains("`log.colour`"), "{e}");
        assert!(set_layer(&["novalue".to_string()]).is_err());
    }

    #[test]
    fn the_flat_form_is_still_read_as_presence() {
        let (_g, p) = file("backend = \"redis\"\nhttp_port = 9000\n[rate_limit]\nburst = 10\n");
        let c = build(&[file_layer(&p).unwrap()]).unwrap();
        assert_eq!(c.presence.backend, presence::BackendKind::Redis);
        assert_eq!(c.presence.http_port, 9000);
        assert_eq!(c.presence.rate_limit.burst, 10);
        let (_g2, p2) = file("bogus = 1\n");
        let e = build(&[file_layer(&p2).unwrap()]).unwrap_err().to_string();
        assert!(e.contains("`presence.bogus`"), "{e}");
    }
}
