//! A node's link security as the binaries choose it: mutual TLS with the TLS key and
//! certificate kept beside `node.key` (`tls.key`, `tls.crt`, bound to the NodeId; made on
//! first start or by `city-node keygen`), or plaintext when the operator asked for
//! `--insecure` (logged as a warning: peers are then not authenticated and servers cannot
//! authorise by NodeId). The TLS machinery itself is `rpc::tls`.

use crate::Result;
use pqc::Keypair;
use rpc::tls::{LinkSecurity, TlsContext, TlsIdentity};
use std::path::Path;

/// The link security of a node whose key lives in `data_dir`: TLS with the identity in
/// `data_dir` (created when absent, refused when bound to another key), or plaintext when
/// `insecure`.
pub fn node_links(data_dir: &Path, key: &Keypair, insecure: bool) -> Result<LinkSecurity> {
    if insecure {
        tracing::warn!(
            node_id = %key.node_id(),
            "--insecure: node links run in PLAINTEXT without peer authentication; \
             PutShard, Consensus and Federation cannot check who is calling"
        );
        return Ok(LinkSecurity::Insecure);
    }
    std::fs::create_dir_all(data_dir).map_err(|source| crate::Error::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let identity = TlsIdentity::load_or_generate(data_dir, key)?;
    tracing::info!(node_id = %key.node_id(), "node links: mutual TLS 1.3, X25519MLKEM768, NodeId-bound certificate");
    Ok(LinkSecurity::Tls(TlsContext::new(identity)?))
}

/// The links a role runs with: [`LinkSecurity::OwnIdentity`] (every config's default) becomes
/// mutual TLS with the identity in `data_dir` ([`node_links`]); an explicit `Tls` or
/// `Insecure` is kept as given.
pub fn resolve_links(links: &LinkSecurity, data_dir: &Path, key: &Keypair) -> Result<LinkSecurity> {
    match links {
        LinkSecurity::OwnIdentity => node_links(data_dir, key, false),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn creates_then_reloads_and_refuses_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate();
        let first = node_links(dir.path(), &key, false).unwrap();
        let again = node_links(dir.path(), &key, false).unwrap();
        assert_eq!(
            first.tls().unwrap().node_id(),
            again.tls().unwrap().node_id()
        );
        assert!(node_links(dir.path(), &Keypair::generate(), false).is_err());
        assert!(node_links(dir.path(), &key, true).unwrap().tls().is_none());
    }

    #[test]
    fn the_default_resolves_to_tls_and_only_an_explicit_insecure_is_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate();
        let default = LinkSecurity::default();
        assert!(
            default.tls().is_none() && !default.is_insecure(),
            "unresolved"
        );
        assert!(matches!(
            default.lazy_channel("127.0.0.1:1", None, std::time::Duration::from_secs(1)),
            Err(rpc::tls::TlsError::Unresolved)
        ));
        let resolved = resolve_links(&default, dir.path(), &key).unwrap();
        assert_eq!(resolved.tls().unwrap().node_id(), key.node_id());
        assert!(dir.path().join("tls.crt").exists());
        let insecure = resolve_links(&LinkSecurity::Insecure, dir.path(), &key).unwrap();
        assert!(insecure.is_insecure());
    }
}
