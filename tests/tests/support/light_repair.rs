//! Shared by the repair tests (`repair_protocol`, `squatting`): one repair of a tx through
//! the light-node tier of the repair service, followed on the node's event bus to its end.

use dag_core::{CityId, Position, TxId};
use devnet::{CITY, CITY_POS};
use gateway::{EventKind, RepairState};
use node::{CityNode, LightRepairTier, RepairConfig, RepairService, RepairTier};
use pqc::Keypair;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Repairs `id` on `node` through the light-node tier only (signing as `rep_key`, 2 s per
/// holder, 30 s in all); returns the repair's final state and the hex ids of the holders
/// whose answers were acknowledged (checked: hash and receipt).
pub(crate) async fn repair_through_lights(
    node: &Arc<CityNode>,
    rep_key: Keypair,
    id: TxId,
) -> (RepairState, BTreeSet<String>) {
    let tier: Arc<dyn RepairTier> = Arc::new(LightRepairTier::new(
        Arc::downgrade(node),
        rep_key,
        CityId::new(CITY).unwrap(),
        Position::from_degrees(CITY_POS.0, CITY_POS.1).unwrap(),
        Duration::from_secs(2),
    ));
    let bus = node.events().clone();
    let svc = Arc::new(RepairService::new(
        RepairConfig {
            deadline: Duration::from_secs(30),
            ..RepairConfig::default()
        },
        vec![tier],
        bus.clone(),
    ));
    let mut live = bus.subscribe(None).live;
    let n = svc.start(id).unwrap().request_id;
    let mut acked = BTreeSet::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(45), live.recv())
            .await
            .expect("repair events keep coming")
            .unwrap();
        if e.tx_id != id {
            continue;
        }
        if e.kind == EventKind::RepairAcknowledged
            && let Some(h) = e.detail["holder"].as_str()
        {
            acked.insert(h.to_string());
        }
        if matches!(e.kind, EventKind::RepairCompleted | EventKind::RepairFailed) {
            break;
        }
    }
    (svc.status(n).unwrap().state, acked)
}
