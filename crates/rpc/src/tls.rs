//! Node-to-node mutual TLS, in one place: every link between nodes (city → light
//! `ShardStore`, representative ↔ representative `Consensus`, city → continent → global
//! `Federation`) runs over TLS 1.3 with client certificates, on rustls with the aws-lc-rs
//! provider (the library pqc already uses for ML-DSA) and **only** the hybrid post-quantum
//! key exchange X25519MLKEM768 (a peer offering classical groups only is refused).
//!
//! # Identity binding
//! A node's identity stays its ML-DSA-87 key (`NodeId` = BLAKE3 of the public key). Each
//! node also has a TLS key (ECDSA P-256, made by `city-node keygen`) and a self-signed
//! certificate that carries, in a non-critical extension ([`BINDING_OID`]), the node's
//! ML-DSA public key and its ML-DSA signature over [`TLS_BINDING_DOMAIN`] ‖ the certificate's
//! SubjectPublicKeyInfo (DER). A peer accepts a certificate only when that signature
//! verifies; the NodeId it authenticates is then BLAKE3 of the carried public key, which the
//! application checks against what it expects (the dialled node's id from genesis or
//! presence; the committee; the city's representatives). No CA is involved: the binding
//! *is* the certificate's authority, and the TLS handshake proves possession of the key it
//! binds. The handshake's own signature is ECDSA (classical); confidentiality of recorded
//! traffic rests on ML-KEM-768 in the key exchange, and who a peer is rests on ML-DSA-87.
//!
//! # Using it
//! - [`TlsIdentity::generate`] / [`TlsIdentity::save`] / [`TlsIdentity::load`]: the key and
//!   certificate files beside the node key (`tls.key`, `tls.crt`, PEM; the key 0600).
//! - [`LinkSecurity`]: `Tls(TlsContext)`, `OwnIdentity` (the default, resolved by the role at
//!   start) or an explicit `Insecure`; [`LinkSecurity::lazy_channel`] opens a
//!   client channel (checking the server's NodeId when the caller knows it) and
//!   [`TlsContext::accept`] runs a server-side handshake and returns the [`TlsPeer`].
//! - Handlers read the authenticated peer with [`tls_peer`] (the server inserts a
//!   [`PeerConnectInfo`] into every request).

use dag_core::{NodeId, SignatureVerifier, Signer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, NamedGroup, SignatureScheme};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Domain tag of the statement an ML-DSA key signs to bind a TLS key to its NodeId.
pub const TLS_BINDING_DOMAIN: &[u8] = b"citychain/tls-binding/v1";
/// The certificate extension that carries the binding (a private-use arc; the value is
/// `version(1) ‖ u16 pk_len ‖ ML-DSA pk ‖ u16 sig_len ‖ signature`, big-endian lengths).
pub const BINDING_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59_999, 7, 1];
/// The name every node certificate carries and every client asks for (the binding, not the
/// name, is what is checked).
pub const TLS_SERVER_NAME: &str = "node.citychain.invalid";
/// Longest TLS handshake a server waits for before dropping the connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BINDING_VERSION: u8 = 1;

/// Why TLS material or a peer's certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate does not parse as X.509.
    #[error("peer certificate does not parse: {0}")]
    BadCertificate(String),
    /// The certificate carries no NodeId binding extension.
    #[error("certificate carries no NodeId binding (extension {oid})")]
    NoBinding {
        /// The OID looked for.
        oid: String,
    },
    /// The binding extension is malformed.
    #[error("NodeId binding is malformed: {0}")]
    MalformedBinding(&'static str),
    /// The ML-DSA signature over the TLS key does not verify.
    #[error("NodeId binding signature of node {node} does not verify over this TLS key")]
    BadBindingSignature {
        /// The NodeId the certificate claims.
        node: String,
    },
    /// The peer authenticated as another node than the one dialled.
    #[error("dialled node {expected} but the peer is node {actual}")]
    WrongPeer {
        /// Who the caller meant to reach.
        expected: String,
        /// Who answered.
        actual: String,
    },
    /// The key files do not belong to this node key (or to each other).
    #[error("TLS material in {path} is bound to node {bound}, not to this node ({ours})")]
    NotOurs {
        /// Where the files are.
        path: PathBuf,
        /// NodeId of the binding found.
        bound: String,
        /// This node's id.
        ours: String,
    },
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A PEM file does not hold what it should.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// rcgen could not make the key or certificate.
    #[error("generating TLS material: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A bad address was given to dial.
    #[error("bad address {addr}: {reason}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// [`LinkSecurity::OwnIdentity`] used before the role loaded the node's TLS identity.
    #[error(
        "node links not resolved: TLS with the node's own identity is chosen but was never \
         loaded (a role resolves it from its data directory and key at start; give \
         LinkSecurity::Tls or an explicit LinkSecurity::Insecure otherwise)"
    )]
    Unresolved,
    /// Connecting (TCP, and over TLS the handshake with its NodeId check) failed or did not
    /// finish within the connect timeout.
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// The binding statement an ML-DSA key signs for a TLS SubjectPublicKeyInfo.
pub fn binding_message(spki_der: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TLS_BINDING_DOMAIN.len() + spki_der.len());
    m.extend_from_slice(TLS_BINDING_DOMAIN);
    m.extend_from_slice(spki_der);
    m
}

fn encode_binding(pk: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + pk.len() + sig.len());
    v.push(BINDING_VERSION);
    v.extend_from_slice(&(pk.len() as u16).to_be_bytes());
    v.extend_from_slice(pk);
    v.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    v.extend_from_slice(sig);
    v
}

/// Splits a binding extension value into (ML-DSA public key, signature).
pub fn decode_binding(v: &[u8]) -> Result<(&[u8], &[u8]), TlsError> {
    let (&version, rest) = v.split_first().ok_or(TlsError::MalformedBinding("empty"))?;
    if version != BINDING_VERSION {
        return Err(TlsError::MalformedBinding("unknown version"));
    }
    fn take(r: &[u8]) -> Result<(&[u8], &[u8]), TlsError> {
        if r.len() < 2 {
            return Err(TlsError::MalformedBinding("truncated length"));
        }
        let n = u16::from_be_bytes([r[0], r[1]]) as usize;
        let r = &r[2..];
        if r.len() < n {
            return Err(TlsError::MalformedBinding("truncated field"));
        }
        Ok(r.split_at(n))
    }
    let (pk, rest) = take(rest)?;
    let (sig, rest) = take(rest)?;
    if !rest.is_empty() {
        return Err(TlsError::MalformedBinding("trailing bytes"));
    }
    if pk.len() != pqc::PUBLIC_KEY_LEN || sig.len() != pqc::SIGNATURE_LEN {
        return Err(TlsError::MalformedBinding("wrong key or signature length"));
    }
    Ok((pk, sig))
}

/// The NodeId a certificate authenticates: parses it, finds the binding extension and
/// verifies the ML-DSA-87 signature over the certificate's SubjectPublicKeyInfo.
pub fn verify_binding(cert_der: &[u8]) -> Result<NodeId, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let oid = BINDING_OID
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .ok_or(TlsError::NoBinding { oid })?;
    let (pk, sig) = decode_binding(ext.value)?;
    let node = NodeId::from_public_key(pk);
    let spki = cert.public_key().raw;
    pqc::MlDsa87
        .verify(pk, &binding_message(spki), sig)
        .map_err(|_| TlsError::BadBindingSignature {
            node: node.to_string(),
        })?;
    Ok(node)
}

/// A node's TLS key and its certificate bound to the node's ML-DSA identity.
#[derive(Clone)]
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
    node_id: NodeId,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh ECDSA P-256 TLS key and a self-signed certificate carrying `node_key`'s
    /// signature over it (see the module docs).
    pub fn generate(node_key: &pqc::Keypair) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let sig = node_key.sign(&binding_message(&spki));
        let mut params = rcgen::CertificateParams::new(vec![TLS_SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node_key.node_id().to_string());
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                BINDING_OID,
                encode_binding(node_key.public_key(), &sig),
            ));
        let cert = params.self_signed(&key)?;
        Ok(TlsIdentity {
            cert: cert.der().clone(),
            key: Arc::new(PrivatePkcs8KeyDer::from(key.serialize_der())),
            node_id: node_key.node_id(),
        })
    }

    /// The NodeId this certificate is bound to.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// Where [`TlsIdentity::save`] puts the files in `dir`: (certificate, key).
    pub fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("tls.crt"), dir.join("tls.key"))
    }

    /// Writes `tls.crt` and `tls.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let (crt, key) = Self::paths(dir);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", self.cert.to_vec()));
        let key_pem = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            self.key.secret_pkcs8_der().to_vec(),
        ));
        std::fs::write(&crt, cert_pem).map_err(io(&crt))?;
        write_private(&key, key_pem.as_bytes()).map_err(io(&key))?;
        Ok(())
    }

    /// Reads `tls.crt` and `tls.key` from `dir` and checks that the certificate's binding
    /// verifies and names `node_id` (a certificate made for another node key is refused).
    pub fn load(dir: &Path, node_id: NodeId) -> Result<Self, TlsError> {
        let (crt, key) = Self::paths(dir);
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = unpem(&read(&crt)?, "CERTIFICATE").ok_or(TlsError::Pem {
            path: crt.clone(),
            what: "no CERTIFICATE block",
        })?;
        let keyder = unpem(&read(&key)?, "PRIVATE KEY").ok_or(TlsError::Pem {
            path: key.clone(),
            what: "no PRIVATE KEY block",
        })?;
        let bound = verify_binding(&cert)?;
        if bound != node_id {
            return Err(TlsError::NotOurs {
                path: dir.to_path_buf(),
                bound: bound.to_string(),
                ours: node_id.to_string(),
            });
        }
        // The key must be the certificate's: rcgen re-derives the public half.
        let kp = rcgen::KeyPair::try_from(keyder.as_slice()).map_err(|_| TlsError::Pem {
            path: key.clone(),
            what: "not a PKCS#8 key rcgen can read",
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&kp).as_slice()
        {
            return Err(TlsError::Pem {
                path: key,
                what: "the key does not match tls.crt",
            });
        }
        Ok(TlsIdentity {
            cert: CertificateDer::from(cert),
            key: Arc::new(PrivatePkcs8KeyDer::from(keyder)),
            node_id,
        })
    }

    /// Loads the files from `dir`, or makes and saves them when there are none.
    pub fn load_or_generate(dir: &Path, node_key: &pqc::Keypair) -> Result<Self, TlsError> {
        let (crt, key) = Self::paths(dir);
        if crt.exists() || key.exists() {
            return Self::load(dir, node_key.node_id());
        }
        let id = Self::generate(node_key)?;
        id.save(dir)?;
        Ok(id)
    }

    /// A certificate for a fresh TLS key carrying `victim`'s binding unchanged (so it
    /// claims the victim's NodeId, but the signature is over another key): what an attacker
    /// who copied a node's certificate could present. Peers must refuse it.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn stolen_binding_for_test(victim: &TlsIdentity) -> Result<Self, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(victim.cert_der())
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        let oid = BINDING_OID
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        let value = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .ok_or(TlsError::NoBinding { oid })?
            .value
            .to_vec();
        Self::self_signed_for_test(Some(value), victim.node_id)
    }

    /// A certificate without any NodeId binding (a plain self-signed TLS certificate).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn unbound_for_test() -> Result<Self, TlsError> {
        Self::self_signed_for_test(None, NodeId::from_public_key(b"nobody"))
    }

    #[cfg(any(test, feature = "test-utils"))]
    fn self_signed_for_test(binding: Option<Vec<u8>>, claimed: NodeId) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![TLS_SERVER_NAME.to_string()])?;
        if let Some(v) = binding {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(BINDING_OID, v));
        }
        let cert = params.self_signed(&key)?;
        Ok(TlsIdentity {
            cert: cert.der().clone(),
            key: Arc::new(PrivatePkcs8KeyDer::from(key.serialize_der())),
            node_id: claimed,
        })
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn unpem(text: &str, label: &str) -> Option<Vec<u8>> {
    pem::parse_many(text)
        .ok()?
        .into_iter()
        .find(|p| p.tag() == label)
        .map(pem::Pem::into_contents)
}

/// The provider every node link uses: aws-lc-rs, key exchange X25519MLKEM768 only.
pub fn pq_provider() -> CryptoProvider {
    CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

/// Checks a peer's certificate binding (both directions) and the handshake signatures.
#[derive(Debug)]
struct BindingVerifier {
    provider: Arc<CryptoProvider>,
}

fn reject(e: TlsError) -> rustls::Error {
    tracing::debug!(error = %e, "peer certificate refused");
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

impl BindingVerifier {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        verify_binding(end_entity.as_ref())
            .map(|_| ())
            .map_err(reject)
    }
    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

/// The handshake-signature methods both verifier traits require, written once: TLS 1.2 is
/// never negotiated on node links (the configs offer 1.3 only), TLS 1.3 signatures are
/// checked with the provider's algorithms.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.tls13(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

impl ServerCertVerifier for BindingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }
    handshake_signatures!();
}

impl ClientCertVerifier for BindingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }
    handshake_signatures!();
}

/// Who is on the other end of an accepted TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsPeer {
    /// The NodeId the peer's certificate binding proves.
    pub node_id: NodeId,
    /// The key-exchange group negotiated (X25519MLKEM768 on every node link).
    pub kx_group: Option<NamedGroup>,
}

/// What a node's gRPC servers insert into every request: the TCP peer address and, on a
/// TLS link, the authenticated peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerConnectInfo {
    /// The remote socket address.
    pub remote_addr: Option<SocketAddr>,
    /// The authenticated peer; `None` on a plaintext connection.
    pub tls: Option<TlsPeer>,
    /// True when the server runs TLS (so a plaintext connection there is an anonymous
    /// client, never a node).
    pub tls_server: bool,
}

/// The authenticated peer of a request, when the server runs TLS.
pub fn tls_peer<T>(req: &tonic::Request<T>) -> Option<TlsPeer> {
    req.extensions()
        .get::<PeerConnectInfo>()
        .and_then(|c| c.tls)
}

/// Who sent a request that only nodes may send: `Ok(Some(id))` for a mutual-TLS peer,
/// `Ok(None)` on an `--insecure` server (nobody is authenticated there; the caller applies
/// its insecure-mode rule), and `Unauthenticated` for a plaintext connection to a TLS server.
#[allow(clippy::result_large_err)]
pub fn authenticated<T>(req: &tonic::Request<T>) -> Result<Option<NodeId>, tonic::Status> {
    match req.extensions().get::<PeerConnectInfo>() {
        Some(PeerConnectInfo { tls: Some(p), .. }) => Ok(Some(p.node_id)),
        Some(PeerConnectInfo {
            tls_server: true, ..
        }) => Err(tonic::Status::unauthenticated(
            "UNAUTHENTICATED: this method is for nodes: connect with mutual TLS and a NodeId-bound certificate",
        )),
        _ => Ok(None),
    }
}

fn peer_of(certs: Option<&[CertificateDer<'_>]>) -> std::io::Result<NodeId> {
    let cert = certs.and_then(|c| c.first()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "peer sent no certificate",
        )
    })?;
    verify_binding(cert.as_ref())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))
}

/// A node's TLS configuration, server and client side, built once.
#[derive(Clone)]
pub struct TlsContext {
    identity: TlsIdentity,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext")
            .field("node_id", &self.identity.node_id)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// TLS 1.3, X25519MLKEM768 only, mutual authentication by NodeId binding.
    pub fn new(identity: TlsIdentity) -> Result<Self, TlsError> {
        Self::with_provider(identity, pq_provider())
    }

    /// Like [`TlsContext::new`] with another provider (tests use a classical-only one to
    /// check that such a peer is refused).
    pub fn with_provider(
        identity: TlsIdentity,
        provider: CryptoProvider,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(provider);
        let verifier = Arc::new(BindingVerifier {
            provider: provider.clone(),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(vec![identity.cert.clone()], identity.key_der())?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![identity.cert.clone()], identity.key_der())?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsContext {
            identity,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id
    }

    /// Server side of one connection: the handshake (bounded by [`HANDSHAKE_TIMEOUT`]) and
    /// the authenticated peer.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<TcpStream>, TlsPeer)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let conn = tls.get_ref().1;
        let peer = TlsPeer {
            node_id: peer_of(conn.peer_certificates())?,
            kx_group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        };
        Ok((tls, peer))
    }

    /// Client side of one connection to `addr`: TCP (bounded by `connect_timeout`), the
    /// handshake, and — when `expect` is given — a check that the peer is that node.
    pub async fn connect(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        connect_timeout: Duration,
    ) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, TlsPeer)> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())??;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(TLS_SERVER_NAME)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = tokio::time::timeout(
            connect_timeout.max(HANDSHAKE_TIMEOUT),
            tokio_rustls::TlsConnector::from(self.client.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| timed_out())??;
        let conn = tls.get_ref().1;
        let peer = TlsPeer {
            node_id: peer_of(conn.peer_certificates())?,
            kx_group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        };
        if let Some(expected) = expect
            && expected != peer.node_id
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                TlsError::WrongPeer {
                    expected: expected.to_string(),
                    actual: peer.node_id.to_string(),
                },
            ));
        }
        Ok((tls, peer))
    }
}

/// How a node's links run: mutual TLS, or plaintext only when chosen explicitly
/// (`--insecure`, or `Insecure` in a config). The default is [`LinkSecurity::OwnIdentity`]:
/// TLS with the node's own identity, which the role resolves when it starts (it has the
/// data directory and key); a link used before that is refused
/// ([`TlsError::Unresolved`]), never silently plaintext.
#[derive(Debug, Clone, Default)]
pub enum LinkSecurity {
    /// Mutual TLS with NodeId bindings.
    Tls(TlsContext),
    /// Mutual TLS with the identity kept beside the node's key (`tls.crt`, `tls.key`,
    /// created on first start): turned into [`LinkSecurity::Tls`] when the role starts.
    #[default]
    OwnIdentity,
    /// Plaintext h2; servers cannot authorise on a peer identity.
    Insecure,
}

impl LinkSecurity {
    /// The TLS context, if any.
    pub fn tls(&self) -> Option<&TlsContext> {
        match self {
            LinkSecurity::Tls(t) => Some(t),
            LinkSecurity::OwnIdentity | LinkSecurity::Insecure => None,
        }
    }

    /// True for links chosen to run in plaintext.
    pub fn is_insecure(&self) -> bool {
        matches!(self, LinkSecurity::Insecure)
    }

    /// A lazily connecting channel to `addr` (`host:port`, or a URL whose authority is
    /// used). Over TLS, `expect` (when known) must be the NodeId the server proves.
    pub fn lazy_channel(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        connect_timeout: Duration,
    ) -> Result<Channel, TlsError> {
        let endpoint = endpoint(addr, connect_timeout)?;
        match self {
            LinkSecurity::Insecure => Ok(endpoint.connect_lazy()),
            LinkSecurity::Tls(ctx) => {
                Ok(endpoint.connect_with_connector_lazy(connector(ctx, expect, connect_timeout)))
            }
            LinkSecurity::OwnIdentity => Err(TlsError::Unresolved),
        }
    }

    /// A channel to `addr` connected now: TCP and, over TLS, the whole handshake (ML-KEM key
    /// exchange, certificate and NodeId check) done within `connect_timeout`, so a first
    /// call on it pays none of that inside its own deadline. Like a lazy channel it
    /// reconnects by itself if the connection drops later.
    pub async fn channel(
        &self,
        addr: &str,
        expect: Option<NodeId>,
        connect_timeout: Duration,
    ) -> Result<Channel, TlsError> {
        let endpoint = endpoint(addr, connect_timeout)?;
        let connected = match self {
            LinkSecurity::Insecure => endpoint.connect().await,
            LinkSecurity::Tls(ctx) => {
                endpoint
                    .connect_with_connector(connector(ctx, expect, connect_timeout))
                    .await
            }
            LinkSecurity::OwnIdentity => return Err(TlsError::Unresolved),
        };
        connected.map_err(|e| {
            use std::error::Error as _;
            let mut reason = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                reason = format!("{reason}: {s}");
                src = s.source();
            }
            TlsError::Connect {
                addr: addr.to_string(),
                reason,
            }
        })
    }
}

/// The endpoint for `addr` with the node links' settings.
fn endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint, TlsError> {
    let bad = |reason: String| TlsError::Address {
        addr: addr.to_string(),
        reason,
    };
    let url = match addr.split_once("://") {
        Some((_, rest)) => format!("http://{rest}"),
        None => format!("http://{addr}"),
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// A connector dialling over mutual TLS, the server proving `expect` (when known).
fn connector(
    ctx: &TlsContext,
    expect: Option<NodeId>,
    connect_timeout: Duration,
) -> impl tower::Service<
    Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    let ctx = ctx.clone();
    tower::service_fn(move |uri: Uri| {
        let ctx = ctx.clone();
        async move {
            let host = uri.host().unwrap_or("127.0.0.1");
            let port = uri.port_u16().unwrap_or(80);
            let (tls, _) = ctx
                .connect(&format!("{host}:{port}"), expect, connect_timeout)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn binding_round_trip_and_forgeries() {
        let kp = pqc::Keypair::generate();
        let id = TlsIdentity::generate(&kp).unwrap();
        assert_eq!(verify_binding(id.cert_der()).unwrap(), kp.node_id());

        // Another node's binding copied into a certificate of a different TLS key fails.
        let other = TlsIdentity::generate(&pqc::Keypair::generate()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(id.cert_der()).unwrap();
        let ext = c
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.4.1.59999.7.1")
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![TLS_SERVER_NAME.into()]).unwrap();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                BINDING_OID,
                ext.value.to_vec(),
            ));
        let stolen = params.self_signed(&key).unwrap();
        assert!(matches!(
            verify_binding(stolen.der()),
            Err(TlsError::BadBindingSignature { .. })
        ));
        // No binding at all.
        let plain = rcgen::CertificateParams::new(vec![TLS_SERVER_NAME.into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(
            verify_binding(plain.der()),
            Err(TlsError::NoBinding { .. })
        ));
        assert!(verify_binding(b"not a certificate").is_err());
        assert_ne!(other.node_id(), id.node_id());
    }

    #[test]
    fn decode_binding_refuses_malformed_values() {
        for bad in [
            &[][..],
            &[2, 0, 0, 0, 0],
            &[1, 0],
            &[1, 0, 5, 1, 2],
            &[1, 0, 0, 0, 0, 9],
            &[1, 0, 0, 0, 0],
        ] {
            assert!(decode_binding(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn save_load_and_wrong_node_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kp = pqc::Keypair::generate();
        let id = TlsIdentity::generate(&kp).unwrap();
        id.save(dir.path()).unwrap();
        let back = TlsIdentity::load(dir.path(), kp.node_id()).unwrap();
        assert_eq!(back.cert_der(), id.cert_der());
        let other = pqc::Keypair::generate();
        assert!(matches!(
            TlsIdentity::load(dir.path(), other.node_id()),
            Err(TlsError::NotOurs { .. })
        ));
        // A key file from another identity is refused.
        let id2 = TlsIdentity::generate(&kp).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        id2.save(dir2.path()).unwrap();
        std::fs::copy(dir2.path().join("tls.key"), dir.path().join("tls.key")).unwrap();
        assert!(matches!(
            TlsIdentity::load(dir.path(), kp.node_id()),
            Err(TlsError::Pem { .. })
        ));
    }
}
