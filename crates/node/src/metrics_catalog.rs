//! The catalogue of every metric the node library and the binaries export: name, kind and
//! HELP text ([`METRICS`]), registered with the recorder by [`describe_all`]; the explicit
//! histogram buckets ([`LATENCY_BUCKETS`], [`COUNT_BUCKETS`]); and the light node's
//! recording helpers. A test checks that the catalogue and the code's metric names agree.

use std::time::Duration;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, exported with explicit buckets.
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricHelp {
    /// The Prometheus name.
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// The HELP text.
    pub help: &'static str,
}

/// Buckets of every `*_seconds` histogram: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of count histograms (txs per micro-batch).
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Buckets of byte-size histograms (bytes per micro-batch): 1 KiB to 4 MiB.
pub const BYTES_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 2097152.0, 4194304.0,
];

/// Every metric, sorted by name.
pub const METRICS: &[MetricHelp] = &[
    MetricHelp {
        name: "city_rereplications_skipped_total",
        kind: MetricKind::Counter,
        help: "Re-replications of a departed holder's shards skipped (by reason).",
    },
    MetricHelp {
        name: "city_rereplications_started_total",
        kind: MetricKind::Counter,
        help: "Re-replications started after a holder left the city.",
    },
    MetricHelp {
        name: "citychain_accept_errors_total",
        kind: MetricKind::Counter,
        help: "TCP/TLS accept errors on the gRPC listener.",
    },
    MetricHelp {
        name: "citychain_admission_seconds",
        kind: MetricKind::Histogram,
        help: "Time from receipt to the answer of an admitted tx (Held), seconds.",
    },
    MetricHelp {
        name: "citychain_admission_stage_seconds",
        kind: MetricKind::Histogram,
        help: "Time spent in one admission stage (pop, verify, store, hold), seconds.",
    },
    MetricHelp {
        name: "citychain_bad_receipts_total",
        kind: MetricKind::Counter,
        help: "Holder receipts that failed verification.",
    },
    MetricHelp {
        name: "citychain_batch_interval_seconds",
        kind: MetricKind::Gauge,
        help: "The representative's current proposal interval, seconds.",
    },
    MetricHelp {
        name: "citychain_budget_refusals_total",
        kind: MetricKind::Counter,
        help: "Node server requests or streams refused RESOURCE_EXHAUSTED by a budget (by budget: method_size, peer_bytes, server_bytes, rate).",
    },
    MetricHelp {
        name: "citychain_build_info",
        kind: MetricKind::Gauge,
        help: "Always 1; labels: version, role.",
    },
    MetricHelp {
        name: "citychain_colocated_spread_total",
        kind: MetricKind::Counter,
        help: "Stripes whose co-located shards were spread to distinct holders.",
    },
    MetricHelp {
        name: "citychain_consensus_committee_unreachable_total",
        kind: MetricKind::Counter,
        help: "Epoch changes that kept the ending committee because an elected representative has no address (neither in the genesis file nor published with SetEndpoint).",
    },
    MetricHelp {
        name: "citychain_consensus_epoch_changes_total",
        kind: MetricKind::Counter,
        help: "Consensus epochs ended at a term boundary in the committed sequence.",
    },
    MetricHelp {
        name: "citychain_corrupt_shards_total",
        kind: MetricKind::Counter,
        help: "Shards found corrupt (hash mismatch) on read.",
    },
    MetricHelp {
        name: "citychain_cross_relayed_again_total",
        kind: MetricKind::Counter,
        help: "Pending cross-city transfer-outs relayed again to the receiving city (their answer was late).",
    },
    MetricHelp {
        name: "citychain_cross_relays_total",
        kind: MetricKind::Counter,
        help: "Relay txs (certified cross-city statements) submitted to the other city's representatives.",
    },
    MetricHelp {
        name: "citychain_duplicate_commits_total",
        kind: MetricKind::Counter,
        help: "Commits of a tx already ordered, ignored.",
    },
    MetricHelp {
        name: "citychain_executed_checkpoints",
        kind: MetricKind::Gauge,
        help: "Checkpoints executed into the ledger (latest sequence + 1).",
    },
    MetricHelp {
        name: "citychain_executed_txs_total",
        kind: MetricKind::Counter,
        help: "Txs executed against the ledger (by outcome).",
    },
    MetricHelp {
        name: "citychain_execution_bad_bodies_total",
        kind: MetricKind::Counter,
        help: "Ordered tx bodies that could not be decoded for execution.",
    },
    MetricHelp {
        name: "citychain_execution_blocked_seq",
        kind: MetricKind::Gauge,
        help: "Checkpoint sequence execution waits on (a body not yet here); -1 when not blocked.",
    },
    MetricHelp {
        name: "citychain_execution_bodies_total",
        kind: MetricKind::Counter,
        help: "Tx bodies fetched for execution (by source).",
    },
    MetricHelp {
        name: "citychain_flagged_total",
        kind: MetricKind::Counter,
        help: "Txs admitted although outside their claimed city (pop_mode = flag).",
    },
    MetricHelp {
        name: "citychain_grpc_server_handling_seconds",
        kind: MetricKind::Histogram,
        help: "gRPC calls served, from arrival to the end of the response, by service and method.",
    },
    MetricHelp {
        name: "citychain_grpc_server_requests_total",
        kind: MetricKind::Counter,
        help: "gRPC calls served, by service, method and status code (OK, NOT_FOUND, ...).",
    },
    MetricHelp {
        name: "citychain_health_serving",
        kind: MetricKind::Gauge,
        help: "1 while gRPC health says SERVING for the service (started, not stopping, store up, k live holders on a city), else 0.",
    },
    MetricHelp {
        name: "citychain_hold_expired_total",
        kind: MetricKind::Counter,
        help: "Pending holds that expired before n receipts arrived.",
    },
    MetricHelp {
        name: "citychain_hold_failed_total",
        kind: MetricKind::Counter,
        help: "Txs whose hold failed (fewer than n distinct holders answered).",
    },
    MetricHelp {
        name: "citychain_hold_seconds",
        kind: MetricKind::Histogram,
        help: "Time to collect the n holder receipts of a stripe, seconds.",
    },
    MetricHelp {
        name: "citychain_holder_cooldowns_total",
        kind: MetricKind::Counter,
        help: "Holders put on cooldown after failures.",
    },
    MetricHelp {
        name: "citychain_light_advertised_free_bytes",
        kind: MetricKind::Gauge,
        help: "Free capacity this light node advertises to presence, bytes.",
    },
    MetricHelp {
        name: "citychain_light_challenges_total",
        kind: MetricKind::Counter,
        help: "Storage challenges a light node answered (by result: proved, not_held, error).",
    },
    MetricHelp {
        name: "citychain_light_free_bytes",
        kind: MetricKind::Gauge,
        help: "Bytes this light node may still store (quota and disk), bytes.",
    },
    MetricHelp {
        name: "citychain_light_put_bytes_total",
        kind: MetricKind::Counter,
        help: "Shard bytes newly stored by a light node.",
    },
    MetricHelp {
        name: "citychain_light_put_seconds",
        kind: MetricKind::Histogram,
        help: "Time a light node takes to store a shard and sign its receipt, seconds.",
    },
    MetricHelp {
        name: "citychain_light_puts_total",
        kind: MetricKind::Counter,
        help: "PutShard calls on a light node (by outcome: stored, already_stored, error).",
    },
    MetricHelp {
        name: "citychain_light_quota_bytes",
        kind: MetricKind::Gauge,
        help: "This light node's storage quota, bytes.",
    },
    MetricHelp {
        name: "citychain_light_repair_acks_total",
        kind: MetricKind::Counter,
        help: "REPAIR_REQUESTs a light node answered.",
    },
    MetricHelp {
        name: "citychain_light_repair_refused_total",
        kind: MetricKind::Counter,
        help: "REPAIR_REQUESTs a light node refused (not a representative, bad signature).",
    },
    MetricHelp {
        name: "citychain_light_repair_unchecked_total",
        kind: MetricKind::Counter,
        help: "REPAIR_REQUESTs answered without a genesis to check the signer.",
    },
    MetricHelp {
        name: "citychain_light_used_bytes",
        kind: MetricKind::Gauge,
        help: "Bytes of shards this light node stores.",
    },
    MetricHelp {
        name: "citychain_lights_not_admitted",
        kind: MetricKind::Gauge,
        help: "Light nodes in the city's view that are not admitted to placement (allow-list or stake).",
    },
    MetricHelp {
        name: "citychain_micro_batch_bytes",
        kind: MetricKind::Histogram,
        help: "Bytes of txs per micro-batch cut for the light nodes (by path).",
    },
    MetricHelp {
        name: "citychain_micro_batch_txs",
        kind: MetricKind::Histogram,
        help: "Txs per micro-batch sent to the light nodes.",
    },
    MetricHelp {
        name: "citychain_no_room_total",
        kind: MetricKind::Counter,
        help: "Puts refused by holders with no room.",
    },
    MetricHelp {
        name: "citychain_ordered_txs_total",
        kind: MetricKind::Counter,
        help: "Txs ordered by the city's consensus.",
    },
    MetricHelp {
        name: "citychain_pipeline_abandoned_total",
        kind: MetricKind::Counter,
        help: "Txs the pipeline abandoned (caller gone).",
    },
    MetricHelp {
        name: "citychain_pipeline_batched_total",
        kind: MetricKind::Counter,
        help: "Txs sent through the batched put path.",
    },
    MetricHelp {
        name: "citychain_pipeline_waiting",
        kind: MetricKind::Gauge,
        help: "Txs waiting in the sharding pipeline.",
    },
    MetricHelp {
        name: "citychain_placement_event_weighted_total",
        kind: MetricKind::Counter,
        help: "Placements whose weights an event multiplier changed.",
    },
    MetricHelp {
        name: "citychain_recovered_holds_total",
        kind: MetricKind::Counter,
        help: "Txs left Admitted at a crash that recovery finished.",
    },
    MetricHelp {
        name: "citychain_repair_bad_answers_total",
        kind: MetricKind::Counter,
        help: "Repair-protocol answers that failed verification.",
    },
    MetricHelp {
        name: "citychain_repair_outcomes_total",
        kind: MetricKind::Counter,
        help: "Repair-protocol outcomes (by tier and result).",
    },
    MetricHelp {
        name: "citychain_repair_requests_total",
        kind: MetricKind::Counter,
        help: "Repair-protocol requests sent.",
    },
    MetricHelp {
        name: "citychain_repair_tier_seconds",
        kind: MetricKind::Histogram,
        help: "Time one repair tier took, seconds.",
    },
    MetricHelp {
        name: "citychain_rereplicated_shards_total",
        kind: MetricKind::Counter,
        help: "Shards re-created on new holders.",
    },
    MetricHelp {
        name: "citychain_restores_total",
        kind: MetricKind::Counter,
        help: "Txs restored from their shards.",
    },
    MetricHelp {
        name: "citychain_stake_applied_total",
        kind: MetricKind::Counter,
        help: "Staking requests applied.",
    },
    MetricHelp {
        name: "citychain_stake_rejected_total",
        kind: MetricKind::Counter,
        help: "Staking requests rejected (by reason).",
    },
    MetricHelp {
        name: "citychain_standby_checkpoints_total",
        kind: MetricKind::Counter,
        help: "Checkpoints a standby representative took from the committee (answered alike by members with more than a third of the stake) before it was elected.",
    },
    MetricHelp {
        name: "citychain_storage_audit_epoch",
        kind: MetricKind::Gauge,
        help: "Latest storage-audit epoch completed.",
    },
    MetricHelp {
        name: "citychain_storage_challenges_total",
        kind: MetricKind::Counter,
        help: "Storage challenges sent to holders (by result).",
    },
    MetricHelp {
        name: "citychain_store_io_failures_total",
        kind: MetricKind::Counter,
        help: "I/O failures of an embedded store.",
    },
    MetricHelp {
        name: "citychain_store_quarantined_total",
        kind: MetricKind::Counter,
        help: "Corrupt store files moved aside at start.",
    },
    MetricHelp {
        name: "citychain_store_reopens_total",
        kind: MetricKind::Counter,
        help: "Embedded store re-opened after a failure.",
    },
    MetricHelp {
        name: "citychain_store_serving",
        kind: MetricKind::Gauge,
        help: "1 while the embedded store takes writes, else 0.",
    },
    MetricHelp {
        name: "citychain_stripes_colocated",
        kind: MetricKind::Gauge,
        help: "Stripes with two or more shards on one holder.",
    },
    MetricHelp {
        name: "citychain_stripes_cut_total",
        kind: MetricKind::Counter,
        help: "Micro-batches cut into stripes (by path).",
    },
    MetricHelp {
        name: "citychain_stripes_one_loss_from_unrecoverable",
        kind: MetricKind::Gauge,
        help: "Stripes with exactly k healthy holders.",
    },
    MetricHelp {
        name: "citychain_stripes_underplaced",
        kind: MetricKind::Gauge,
        help: "Stripes with fewer than n holders.",
    },
    MetricHelp {
        name: "citychain_tls_handshake_failures_total",
        kind: MetricKind::Counter,
        help: "Failed TLS handshakes on the node's listener.",
    },
    MetricHelp {
        name: "citychain_tx_admitted_total",
        kind: MetricKind::Counter,
        help: "Txs admitted (answered Held).",
    },
    MetricHelp {
        name: "citychain_tx_rejected_total",
        kind: MetricKind::Counter,
        help: "Txs rejected (by code).",
    },
    MetricHelp {
        name: "citychain_tx_resubmitted_total",
        kind: MetricKind::Counter,
        help: "Txs submitted again after a retryable answer.",
    },
    MetricHelp {
        name: "citychain_verify_granted_total",
        kind: MetricKind::Counter,
        help: "Signature-verification slots granted.",
    },
    MetricHelp {
        name: "citychain_verify_queue_waiting",
        kind: MetricKind::Gauge,
        help: "Txs waiting for signature verification.",
    },
    MetricHelp {
        name: "citychain_working_set_evicted_total",
        kind: MetricKind::Counter,
        help: "Txs evicted from the working set (by reason).",
    },
    MetricHelp {
        name: "citychain_working_set_txs",
        kind: MetricKind::Gauge,
        help: "Txs in the working set.",
    },
    MetricHelp {
        name: "citychain_working_store_commit_txs",
        kind: MetricKind::Histogram,
        help: "Admissions per durable commit of the city's working store (txs.redb): a commit's cost is mostly fixed, so larger groups cost less per tx.",
    },
    MetricHelp {
        name: "citychain_working_store_deferred",
        kind: MetricKind::Gauge,
        help: "Ordered and executed txs whose body stays in the working store for now (not held, not archived, or a cross-city transfer not settled).",
    },
    MetricHelp {
        name: "citychain_working_store_pruned_total",
        kind: MetricKind::Counter,
        help: "Tx bodies removed from the city's working store (txs.redb) once ordered, executed, held, archived and settled.",
    },
    MetricHelp {
        name: "citychain_working_store_txs",
        kind: MetricKind::Gauge,
        help: "Tx bodies in the city's working store (txs.redb).",
    },
    MetricHelp {
        name: "continent_checkpoints_logged",
        kind: MetricKind::Counter,
        help: "City checkpoints appended to the continent log.",
    },
    MetricHelp {
        name: "continent_handovers_accepted",
        kind: MetricKind::Counter,
        help: "City committee handovers the continent accepted (certified by the old committee).",
    },
    MetricHelp {
        name: "continent_head_push_failures",
        kind: MetricKind::Counter,
        help: "Failed pushes of the continent head to the global.",
    },
    MetricHelp {
        name: "federation_checkpoints_federated",
        kind: MetricKind::Counter,
        help: "Checkpoints a representative got federated.",
    },
    MetricHelp {
        name: "federation_handovers_pushed",
        kind: MetricKind::Counter,
        help: "Committee handovers a representative saw accepted by the continent after pushing its share.",
    },
    MetricHelp {
        name: "federation_push_refusals",
        kind: MetricKind::Counter,
        help: "Checkpoint pushes the continent refused.",
    },
    MetricHelp {
        name: "global_heads_logged",
        kind: MetricKind::Counter,
        help: "Continent heads appended to the global log.",
    },
    MetricHelp {
        name: "gossip_bytes_received_total",
        kind: MetricKind::Counter,
        help: "Gossip bytes received.",
    },
    MetricHelp {
        name: "gossip_bytes_sent_total",
        kind: MetricKind::Counter,
        help: "Gossip bytes sent.",
    },
    MetricHelp {
        name: "gossip_downs_total",
        kind: MetricKind::Counter,
        help: "Members gossip declared down.",
    },
    MetricHelp {
        name: "gossip_members_alive",
        kind: MetricKind::Gauge,
        help: "Gossip members alive.",
    },
    MetricHelp {
        name: "gossip_members_suspect",
        kind: MetricKind::Gauge,
        help: "Gossip members suspected.",
    },
    MetricHelp {
        name: "gossip_rejected_total",
        kind: MetricKind::Counter,
        help: "Gossip packets rejected.",
    },
    MetricHelp {
        name: "gossip_suspicions_total",
        kind: MetricKind::Counter,
        help: "Gossip suspicions raised.",
    },
    MetricHelp {
        name: "nodelist_gossip_live",
        kind: MetricKind::Gauge,
        help: "Nodes gossip sees alive (per view).",
    },
    MetricHelp {
        name: "nodelist_gossip_only",
        kind: MetricKind::Gauge,
        help: "1 when the view runs on gossip alone (presence unreachable).",
    },
    MetricHelp {
        name: "nodelist_presence_leaves_overruled_total",
        kind: MetricKind::Counter,
        help: "Presence leaves overruled by gossip.",
    },
    MetricHelp {
        name: "nodelist_presence_reachable",
        kind: MetricKind::Gauge,
        help: "1 while presence answers (per view).",
    },
    MetricHelp {
        name: "nodelist_view_nodes",
        kind: MetricKind::Gauge,
        help: "Nodes in the node-list view.",
    },
    MetricHelp {
        name: "nodelist_view_role_nodes",
        kind: MetricKind::Gauge,
        help: "Nodes in the node-list view per role.",
    },
    MetricHelp {
        name: "presence_expired_total",
        kind: MetricKind::Counter,
        help: "Presence entries expired by the sweeper.",
    },
    MetricHelp {
        name: "presence_http_requests_total",
        kind: MetricKind::Counter,
        help: "Presence HTTP requests (by route and status).",
    },
    MetricHelp {
        name: "presence_online_nodes",
        kind: MetricKind::Gauge,
        help: "Nodes online in presence.",
    },
];

/// Registers the HELP text (and unit) of every metric in [`METRICS`] with the installed
/// recorder; call once after installing it.
pub fn describe_all() {
    for m in METRICS {
        let unit = m
            .name
            .ends_with("_seconds")
            .then_some(metrics::Unit::Seconds);
        match (m.kind, unit) {
            (MetricKind::Counter, _) => metrics::describe_counter!(m.name, m.help),
            (MetricKind::Gauge, _) => metrics::describe_gauge!(m.name, m.help),
            (MetricKind::Histogram, Some(u)) => metrics::describe_histogram!(m.name, u, m.help),
            (MetricKind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Records one PutShard on a light node: `Ok(already_stored)` or an error.
pub(crate) fn light_put<E>(r: &Result<bool, E>, bytes: u64, took: Duration) {
    let outcome = match r {
        Ok(false) => {
            metrics::counter!("citychain_light_put_bytes_total").increment(bytes);
            "stored"
        }
        Ok(true) => "already_stored",
        Err(_) => "error",
    };
    metrics::counter!("citychain_light_puts_total", "outcome" => outcome).increment(1);
    metrics::histogram!("citychain_light_put_seconds").record(took.as_secs_f64());
}

/// Records one storage challenge answered by a light node: `Ok(held)` or an error.
pub(crate) fn light_challenge<E>(r: &Result<bool, E>) {
    let result = match r {
        Ok(true) => "proved",
        Ok(false) => "not_held",
        Err(_) => "error",
    };
    metrics::counter!("citychain_light_challenges_total", "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Metric names written in `counter!("…")`, `gauge!("…")`, `histogram!("…")` calls
    /// under `dir`.
    fn names_in(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                names_in(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for mac in ["counter!(", "gauge!(", "histogram!("] {
                    for (i, _) in text.match_indices(mac) {
                        let rest = text[i + mac.len()..].trim_start();
                        if let Some(r) = rest.strip_prefix('"') {
                            let name: String = r.chars().take_while(|c| *c != '"').collect();
                            if !name.is_empty()
                                && name.chars().all(|c| {
                                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
                                })
                            {
                                out.insert(name);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_catalogue_and_the_code_name_the_same_metrics() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut used = BTreeSet::new();
        for d in ["crates", "bins"] {
            names_in(&root.join(d), &mut used);
        }
        let listed: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_string()).collect();
        let undocumented: Vec<_> = used.difference(&listed).collect();
        assert!(
            undocumented.is_empty(),
            "metrics without HELP in METRICS: {undocumented:?}"
        );
        let unused: Vec<_> = listed.difference(&used).collect();
        assert!(
            unused.is_empty(),
            "METRICS lists names no code records: {unused:?}"
        );
        let mut sorted = METRICS.to_vec();
        sorted.sort_by_key(|m| m.name);
        assert_eq!(sorted, METRICS.to_vec(), "keep METRICS sorted");
        for m in METRICS {
            assert!(!m.help.is_empty() && m.help.ends_with('.'), "{}", m.name);
            if m.kind == MetricKind::Counter {
                assert!(!m.name.ends_with("_seconds"), "{}", m.name);
            }
        }
    }

    #[test]
    fn buckets_increase() {
        for b in [LATENCY_BUCKETS, COUNT_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
