//! The typed refusals of the federation logs ([`FederationError`]) and their canonical
//! encoding, which travels in gRPC status details so a client gets the same value back.

use super::{FEDERATION_VERSION, hash, version};
use dag_core::consensus::Stake;
use dag_core::{DecodeError, Hash32, NodeId, Reader, Writer};
use tonic::{Code, Status};

/// Why a log refused a federation request (or, client side, why the call failed). The
/// server sends it in the gRPC status details; [`FederationError::from_status`] restores it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// A field or value is malformed.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The city is not configured at this continent.
    #[error("city {} is not configured here", city.short())]
    UnknownCity {
        /// City id.
        city: Hash32,
    },
    /// A signer is not a member of the city's committee.
    #[error("signer {} is not a member of city {}", signer.short(), city.short())]
    NotMember {
        /// City id.
        city: Hash32,
        /// The signer.
        signer: NodeId,
    },
    /// A member's signature does not verify.
    #[error("checkpoint {sequence} of city {}: bad signature of {}", city.short(), signer.short())]
    BadSignature {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
        /// The signer named.
        signer: NodeId,
    },
    /// A certificate (more than one signature) whose valid signatures are not a quorum.
    #[error("checkpoint {sequence} of city {}: stake {have} signed, {need} needed", city.short())]
    NoQuorum {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
        /// Stake of valid signatures.
        have: Stake,
        /// Quorum stake.
        need: Stake,
    },
    /// The share was pooled; the checkpoint is appended once shares reach a quorum.
    /// Retryable: push again shortly (nothing was appended yet).
    #[error("checkpoint {sequence} of city {}: awaiting quorum ({have} of {need} stake)", city.short())]
    AwaitingQuorum {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
        /// Stake pooled so far.
        have: Stake,
        /// Quorum stake.
        need: Stake,
    },
    /// The checkpoint is ahead of the log: push from `expected` (gaps are filled, never
    /// skipped).
    #[error("city {}: got sequence {got}, expected {expected}", city.short())]
    Gap {
        /// City id.
        city: Hash32,
        /// The sequence the log appends next.
        expected: u64,
        /// The sequence pushed.
        got: u64,
    },
    /// The header's prev hash is not the running hash of the last logged checkpoint.
    #[error("checkpoint {sequence} of city {}: prev hash does not continue the log", city.short())]
    WrongPrev {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
    },
    /// Another header is already logged for this (city, sequence).
    #[error("city {} already logged a different header for sequence {sequence}", city.short())]
    Fork {
        /// City id.
        city: Hash32,
        /// Sequence.
        sequence: u64,
    },
    /// The log (continent) is not configured at this global, or a key does not match the
    /// log id it claims.
    #[error("log {} is not configured here", log_id.short())]
    UnknownLog {
        /// The log's node id.
        log_id: NodeId,
    },
    /// A tree head's or receipt's signature does not verify.
    #[error("log {}: bad tree head or receipt signature", log_id.short())]
    BadTreeHead {
        /// The log's node id.
        log_id: NodeId,
    },
    /// The global logged an older head of this log: send a consistency proof from
    /// `from_size`.
    #[error("log {}: send a consistency proof from size {from_size}", log_id.short())]
    NeedConsistency {
        /// The log's node id.
        log_id: NodeId,
        /// Size of the last logged head.
        from_size: u64,
    },
    /// The head is not an extension of the last logged head (forged or forked log).
    #[error("log {}: head of size {new_size} is not consistent with logged size {old_size}", log_id.short())]
    Inconsistent {
        /// The log's node id.
        log_id: NodeId,
        /// Size of the last logged head.
        old_size: u64,
        /// Size of the pushed head.
        new_size: u64,
    },
    /// The head is older than the last logged one.
    #[error("log {}: head of size {got} is older than logged size {logged}", log_id.short())]
    Stale {
        /// The log's node id.
        log_id: NodeId,
        /// Size of the last logged head.
        logged: u64,
        /// Size pushed.
        got: u64,
    },
    /// No head of this continent covering `tree_size` is logged by the global yet.
    #[error("no global-logged head covers tree size {tree_size} yet (newest anchored: {anchored})")]
    NotYetAnchored {
        /// The tree size asked about.
        tree_size: u64,
        /// Size of the newest anchored head (0: none).
        anchored: u64,
    },
    /// Index or tree size beyond the log.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// This role does not serve the request (a continent asked to log tree heads, …).
    #[error("not served by this role: {0}")]
    NotServed(String),
    /// The store failed (retryable).
    #[error("store: {0}")]
    Store(String),
    /// The handover share was pooled; the handover is accepted once the OLD committee's
    /// shares reach a quorum. Retryable: push again shortly.
    #[error("handover to epoch {epoch} of city {}: awaiting quorum ({have} of {need} stake)", city.short())]
    HandoverAwaitingQuorum {
        /// City id.
        city: Hash32,
        /// The new epoch.
        epoch: u64,
        /// Old-committee stake pooled so far.
        have: Stake,
        /// Quorum stake of the old committee.
        need: Stake,
    },
    /// The old epoch's last checkpoint (`last_sequence`) is not logged yet: nothing was
    /// kept. Retryable: push again once the log reached it.
    #[error("handover to epoch {epoch} of city {}: checkpoint {last_sequence} not logged yet", city.short())]
    HandoverTooEarly {
        /// City id.
        city: Hash32,
        /// The new epoch.
        epoch: u64,
        /// The old epoch's last checkpoint named by the handover.
        last_sequence: u64,
    },
    /// The handover contradicts the log: another handover is accepted for this epoch or a
    /// later position, or the named last checkpoint is logged with another running hash.
    #[error("handover to epoch {epoch} of city {} conflicts with the logged chain", city.short())]
    HandoverConflict {
        /// City id.
        city: Hash32,
        /// The new epoch.
        epoch: u64,
    },
    /// Client side: the call failed in transport (unreachable, deadline, …) or with a
    /// status that carried no federation error.
    #[error("gRPC status {code:?}: {message}")]
    Transport {
        /// gRPC code.
        code: Code,
        /// Message.
        message: String,
    },
    /// Client side: the server answered with something that does not decode.
    #[error("malformed answer: {0}")]
    BadAnswer(String),
}

impl FederationError {
    /// Worth retrying the same request unchanged later: [`AwaitingQuorum`](Self::AwaitingQuorum),
    /// [`HandoverAwaitingQuorum`](Self::HandoverAwaitingQuorum),
    /// [`HandoverTooEarly`](Self::HandoverTooEarly), a store failure, and transport failures other than permanent statuses.
    /// [`Gap`](Self::Gap) and [`NeedConsistency`](Self::NeedConsistency) call for a
    /// different request; everything else is a refusal.
    pub fn is_retryable(&self) -> bool {
        match self {
            FederationError::AwaitingQuorum { .. }
            | FederationError::HandoverAwaitingQuorum { .. }
            | FederationError::HandoverTooEarly { .. }
            | FederationError::Store(_) => true,
            FederationError::Transport { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Internal
                    | Code::Unknown
                    | Code::Cancelled
                    | Code::Aborted
            ),
            _ => false,
        }
    }

    fn code_and_prefix(&self) -> (Code, &'static str) {
        match self {
            FederationError::Malformed(_) => (Code::InvalidArgument, "MALFORMED"),
            FederationError::UnknownCity { .. } => (Code::NotFound, "UNKNOWN_CITY"),
            FederationError::NotMember { .. } => (Code::PermissionDenied, "NOT_MEMBER"),
            FederationError::BadSignature { .. } => (Code::Unauthenticated, "BAD_SIGNATURE"),
            FederationError::NoQuorum { .. } => (Code::FailedPrecondition, "NO_QUORUM"),
            FederationError::AwaitingQuorum { .. } => (Code::Unavailable, "AWAITING_QUORUM"),
            FederationError::Gap { .. } => (Code::FailedPrecondition, "GAP"),
            FederationError::WrongPrev { .. } => (Code::FailedPrecondition, "WRONG_PREV"),
            FederationError::Fork { .. } => (Code::AlreadyExists, "FORK"),
            FederationError::UnknownLog { .. } => (Code::NotFound, "UNKNOWN_LOG"),
            FederationError::BadTreeHead { .. } => (Code::Unauthenticated, "BAD_SIGNATURE"),
            FederationError::NeedConsistency { .. } => {
                (Code::FailedPrecondition, "NEED_CONSISTENCY")
            }
            FederationError::Inconsistent { .. } => (Code::AlreadyExists, "INCONSISTENT"),
            FederationError::Stale { .. } => (Code::FailedPrecondition, "STALE"),
            FederationError::NotYetAnchored { .. } => {
                (Code::FailedPrecondition, "NOT_YET_ANCHORED")
            }
            FederationError::HandoverAwaitingQuorum { .. } => {
                (Code::Unavailable, "HANDOVER_AWAITING_QUORUM")
            }
            FederationError::HandoverTooEarly { .. } => (Code::Unavailable, "HANDOVER_TOO_EARLY"),
            FederationError::HandoverConflict { .. } => (Code::AlreadyExists, "HANDOVER_CONFLICT"),
            FederationError::OutOfRange(_) => (Code::OutOfRange, "OUT_OF_RANGE"),
            FederationError::NotServed(_) => (Code::Unimplemented, "NOT_SERVED"),
            FederationError::Store(_) => (Code::Internal, "STORE"),
            FederationError::Transport { code, .. } => (*code, "TRANSPORT"),
            FederationError::BadAnswer(_) => (Code::Internal, "BAD_ANSWER"),
        }
    }

    /// The gRPC status: the code and prefix of the proto's table; the details are a
    /// `google.rpc.Status` with a `google.rpc.ErrorInfo` (reason = the prefix) and the
    /// canonical error ([`crate::status::FEDERATION_ERROR_TYPE_URL`]).
    pub fn to_status(&self) -> Status {
        let (code, prefix) = self.code_and_prefix();
        crate::status::typed_status(
            code,
            prefix,
            self,
            [],
            Some(prost_types::Any {
                type_url: crate::status::FEDERATION_ERROR_TYPE_URL.to_string(),
                value: self.encode(),
            }),
        )
    }

    /// The error a server sent (from the details), or [`FederationError::Transport`].
    pub fn from_status(s: &Status) -> Self {
        let typed = crate::status::detail_of(s, crate::status::FEDERATION_ERROR_TYPE_URL)
            .and_then(|b| FederationError::decode(&b).ok());
        match typed {
            Some(e) => e,
            None => FederationError::Transport {
                code: s.code(),
                message: s.message().to_string(),
            },
        }
    }

    /// Canonical encoding: version u8 ‖ kind u8 ‖ id 32 ‖ node 32 ‖ a u64 ‖ b u64 ‖ u16
    /// length ‖ text (at most 1 KiB).
    pub fn encode(&self) -> Vec<u8> {
        let zero = Hash32([0; 32]);
        let none = NodeId::from_bytes([0; 32]);
        use FederationError as E;
        let (kind, id, node, a, b, text): (u8, Hash32, NodeId, u64, u64, &str) = match self {
            E::Malformed(m) => (0, zero, none, 0, 0, m),
            E::UnknownCity { city } => (1, *city, none, 0, 0, ""),
            E::NotMember { city, signer } => (2, *city, *signer, 0, 0, ""),
            E::BadSignature {
                city,
                sequence,
                signer,
            } => (3, *city, *signer, *sequence, 0, ""),
            E::NoQuorum {
                city,
                sequence,
                have,
                need,
            } => (4, *city, none, *sequence, pack(*have, *need), ""),
            E::AwaitingQuorum {
                city,
                sequence,
                have,
                need,
            } => (5, *city, none, *sequence, pack(*have, *need), ""),
            E::Gap {
                city,
                expected,
                got,
            } => (6, *city, none, *expected, *got, ""),
            E::WrongPrev { city, sequence } => (7, *city, none, *sequence, 0, ""),
            E::Fork { city, sequence } => (8, *city, none, *sequence, 0, ""),
            E::UnknownLog { log_id } => (9, zero, *log_id, 0, 0, ""),
            E::BadTreeHead { log_id } => (10, zero, *log_id, 0, 0, ""),
            E::NeedConsistency { log_id, from_size } => (11, zero, *log_id, *from_size, 0, ""),
            E::Inconsistent {
                log_id,
                old_size,
                new_size,
            } => (12, zero, *log_id, *old_size, *new_size, ""),
            E::Stale {
                log_id,
                logged,
                got,
            } => (13, zero, *log_id, *logged, *got, ""),
            E::NotYetAnchored {
                tree_size,
                anchored,
            } => (19, zero, none, *tree_size, *anchored, ""),
            E::HandoverAwaitingQuorum {
                city,
                epoch,
                have,
                need,
            } => (20, *city, none, *epoch, pack(*have, *need), ""),
            E::HandoverTooEarly {
                city,
                epoch,
                last_sequence,
            } => (21, *city, none, *epoch, *last_sequence, ""),
            E::HandoverConflict { city, epoch } => (22, *city, none, *epoch, 0, ""),
            E::OutOfRange(m) => (14, zero, none, 0, 0, m),
            E::NotServed(m) => (15, zero, none, 0, 0, m),
            E::Store(m) => (16, zero, none, 0, 0, m),
            E::Transport { message, .. } => (17, zero, none, 0, 0, message),
            E::BadAnswer(m) => (18, zero, none, 0, 0, m),
        };
        let text = truncate(text, 1024);
        let mut w = Writer::with_capacity(1 + 1 + 64 + 16 + 2 + text.len());
        w.u8(FEDERATION_VERSION)
            .u8(kind)
            .raw(&id.0)
            .raw(node.as_bytes())
            .u64(a)
            .u64(b)
            .bytes_u16(text.as_bytes());
        w.finish()
    }

    /// Strict decoding of [`FederationError::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        use FederationError as E;
        let mut r = Reader::new(bytes);
        version(&mut r, "error version")?;
        let kind = r.u8("error kind")?;
        let city = hash(&mut r, "error city")?;
        let node = NodeId::from_bytes(r.bytes32("error node")?);
        let a = r.u64("error a")?;
        let b = r.u64("error b")?;
        let text = String::from_utf8(r.bytes_u16("error text", 1024)?.to_vec()).map_err(|_| {
            DecodeError::Invalid {
                field: "error text",
                reason: "not UTF-8",
            }
        })?;
        r.finish()?;
        let (have, need) = unpack(b);
        Ok(match kind {
            0 => E::Malformed(text),
            1 => E::UnknownCity { city },
            2 => E::NotMember { city, signer: node },
            3 => E::BadSignature {
                city,
                sequence: a,
                signer: node,
            },
            4 => E::NoQuorum {
                city,
                sequence: a,
                have,
                need,
            },
            5 => E::AwaitingQuorum {
                city,
                sequence: a,
                have,
                need,
            },
            6 => E::Gap {
                city,
                expected: a,
                got: b,
            },
            7 => E::WrongPrev { city, sequence: a },
            8 => E::Fork { city, sequence: a },
            9 => E::UnknownLog { log_id: node },
            10 => E::BadTreeHead { log_id: node },
            11 => E::NeedConsistency {
                log_id: node,
                from_size: a,
            },
            12 => E::Inconsistent {
                log_id: node,
                old_size: a,
                new_size: b,
            },
            13 => E::Stale {
                log_id: node,
                logged: a,
                got: b,
            },
            14 => E::OutOfRange(text),
            15 => E::NotServed(text),
            16 => E::Store(text),
            18 => E::BadAnswer(text),
            19 => E::NotYetAnchored {
                tree_size: a,
                anchored: b,
            },
            20 => E::HandoverAwaitingQuorum {
                city,
                epoch: a,
                have,
                need,
            },
            21 => E::HandoverTooEarly {
                city,
                epoch: a,
                last_sequence: b,
            },
            22 => E::HandoverConflict { city, epoch: a },
            _ => {
                return Err(DecodeError::Invalid {
                    field: "error kind",
                    reason: "not a federation error a server sends",
                });
            }
        })
    }
}

/// Two stakes in one u64 (32 bits each, saturating): quorum stakes fit easily.
fn pack(have: Stake, need: Stake) -> u64 {
    (have.min(u32::MAX as u64) << 32) | need.min(u32::MAX as u64)
}

fn unpack(v: u64) -> (Stake, Stake) {
    (v >> 32, v & u64::from(u32::MAX))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
