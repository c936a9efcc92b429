//! Slim `SubmitTxStream` answers (issue 18, step 4). Every tx of a micro-batch is Held by
//! the same stripe, so its answer would repeat the stripe's receipts (n × a 2.6 KB key and a
//! 4.6 KB signature, ~44 KB for 4+2) once per tx. On a stream whose requests set
//! `slim_answers`, the server sends a stripe's receipts in full the first time, and later
//! answers of that stripe name it and its holders only; the client keeps the receipts of
//! the last [`STREAM_STRIPE_WINDOW`] stripes it received in full and fills them back in,
//! so callers of [`crate::CityClient::submit_stream`] still get every receipt.
//!
//! Both sides keep the same window: the server ([`StripeWindow`]) records a stripe when it
//! sends a Held answer with its receipts, the client ([`ReceiptWindow`]) when it receives
//! one, in the single order of the stream's answers, evicting the oldest beyond the window.
//! A stripe that left the window is simply sent in full again.

use crate::convert::ConvertError;
use dag_core::{DecodeError, NodeId, SignedReceipt, StripeId};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Stripes whose receipts a slim stream answer may reference: the last this many stripes
/// sent in full on the stream (client memory: this many × n receipts, ~2.8 MB for 4+2).
pub const STREAM_STRIPE_WINDOW: usize = 64;

/// The stripe all of `receipts` are for (`None`: no receipts, or they disagree).
pub(crate) fn stripe_of(receipts: &[SignedReceipt]) -> Option<StripeId> {
    let first = receipts.first()?.receipt.stripe_id;
    receipts
        .iter()
        .all(|r| r.receipt.stripe_id == first)
        .then_some(first)
}

/// What identifies one receipt of a stripe: its shard, holder and time (the signed
/// content besides the stripe id and shard hash, which the shard index fixes).
type ReceiptKey = (u16, NodeId, u64);

fn receipt_keys(receipts: &[SignedReceipt]) -> Vec<ReceiptKey> {
    receipts
        .iter()
        .map(|r| (r.receipt.shard_index, r.receipt.holder, r.receipt.time_ms))
        .collect()
}

/// The server's side: which receipts of which stripes went out in full on this stream,
/// oldest stripe first, at most `cap` stripes.
#[derive(Debug)]
pub(crate) struct StripeWindow {
    cap: usize,
    order: VecDeque<StripeId>,
    sent: HashMap<StripeId, Vec<ReceiptKey>>,
}

impl StripeWindow {
    /// An empty window of `cap` stripes (at least 1).
    pub(crate) fn new(cap: usize) -> Self {
        StripeWindow {
            cap: cap.max(1),
            order: VecDeque::new(),
            sent: HashMap::new(),
        }
    }

    /// True if exactly `receipts` (the same receipts of stripe `id`, in order) were sent in
    /// full within the window: only then may an answer reference them. A stripe whose
    /// receipts changed since (re-replicated to other holders, re-issued) goes out in full.
    pub(crate) fn holds(&self, id: &StripeId, receipts: &[SignedReceipt]) -> bool {
        self.sent.get(id).is_some_and(|keys| {
            keys.len() == receipts.len()
                && keys.iter().zip(receipts).all(|(k, r)| {
                    *k == (r.receipt.shard_index, r.receipt.holder, r.receipt.time_ms)
                })
        })
    }

    /// A Held answer carried `id`'s `receipts` in full: remember them (a stripe already in
    /// the window keeps its place and takes the new receipts), forgetting the oldest stripe
    /// beyond the window. Same rule as [`ReceiptWindow::received_in_full`].
    pub(crate) fn sent_in_full(&mut self, id: StripeId, receipts: &[SignedReceipt]) {
        if self.sent.insert(id, receipt_keys(receipts)).is_none() {
            self.order.push_back(id);
            if self.order.len() > self.cap
                && let Some(old) = self.order.pop_front()
            {
                self.sent.remove(&old);
            }
        }
    }
}

/// The client's side: the receipts of the last stripes received in full on this stream,
/// mirroring the server's [`StripeWindow`].
#[derive(Debug)]
pub(crate) struct ReceiptWindow {
    cap: usize,
    order: VecDeque<StripeId>,
    receipts: HashMap<StripeId, Arc<Vec<SignedReceipt>>>,
}

fn invalid(reason: &'static str) -> ConvertError {
    ConvertError::Invalid(DecodeError::Invalid {
        field: "slim answer",
        reason,
    })
}

impl ReceiptWindow {
    /// An empty window of `cap` stripes (at least 1).
    pub(crate) fn new(cap: usize) -> Self {
        ReceiptWindow {
            cap: cap.max(1),
            order: VecDeque::new(),
            receipts: HashMap::new(),
        }
    }

    /// A Held answer with `receipts` arrived: if they are one stripe's, remember them (a
    /// stripe already in the window keeps its place and takes the new receipts). Same rule
    /// as [`StripeWindow::sent_in_full`].
    pub(crate) fn received_in_full(&mut self, receipts: &Arc<Vec<SignedReceipt>>) {
        let Some(id) = stripe_of(receipts) else {
            return;
        };
        if self.receipts.insert(id, receipts.clone()).is_none() {
            self.order.push_back(id);
            if self.order.len() > self.cap
                && let Some(old) = self.order.pop_front()
            {
                self.receipts.remove(&old);
            }
        }
    }

    /// The receipts a slim answer references: those of `stripe` received earlier on this
    /// stream, whose holders must be exactly `holders`, in order.
    pub(crate) fn resolve(
        &self,
        stripe: StripeId,
        holders: &[NodeId],
    ) -> Result<Arc<Vec<SignedReceipt>>, ConvertError> {
        let rs = self.receipts.get(&stripe).ok_or_else(|| {
            invalid("names a stripe whose receipts were not sent in full on this stream")
        })?;
        if rs.len() != holders.len() || rs.iter().zip(holders).any(|(r, h)| r.receipt.holder != *h)
        {
            return Err(invalid(
                "its holders differ from the receipts sent for its stripe",
            ));
        }
        Ok(rs.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dag_core::{Receipt, ShardHash};

    fn receipts(stripe: u8, n: u8) -> Vec<SignedReceipt> {
        (0..n)
            .map(|i| SignedReceipt {
                receipt: Receipt {
                    stripe_id: StripeId::from_bytes([stripe; 32]),
                    shard_index: u16::from(i),
                    shard_hash: ShardHash::from_bytes([i; 32]),
                    holder: NodeId::from_bytes([100 + i; 32]),
                    time_ms: 1,
                },
                holder_public_key: vec![i; 8],
                signature: vec![i; 16],
            })
            .collect()
    }

    fn holders(rs: &[SignedReceipt]) -> Vec<NodeId> {
        rs.iter().map(|r| r.receipt.holder).collect()
    }

    /// Answers Held; tx with nonce `i` is in stripe `i / 4` (4 txs per stripe).
    struct Striped;

    impl crate::CityApi for Striped {
        async fn submit(
            &self,
            tx: dag_core::SignedTx,
        ) -> std::result::Result<crate::Submitted, crate::Rejection> {
            Ok(crate::Submitted {
                tx_id: tx.id(),
                state: crate::TxState::Held,
                receipts: Arc::new(receipts(tx.tx.nonce as u8 / 4, 6)),
            })
        }
        async fn get(
            &self,
            _id: dag_core::TxId,
        ) -> std::result::Result<Option<crate::TxRecord>, crate::Rejection> {
            Ok(None)
        }
        async fn status(&self) -> crate::NodeStatus {
            crate::api::test_status()
        }
    }

    fn txs(n: u64) -> Vec<dag_core::SignedTx> {
        let key = pqc::Keypair::generate();
        (0..n)
            .map(|nonce| {
                let tx = dag_core::Tx::fresh(
                    key.account_id(),
                    key.account_id(),
                    1,
                    nonce,
                    1_767_225_600_000,
                    dag_core::CityId::new("tokyo").unwrap(),
                    dag_core::Position::from_degrees(35.6895, 139.6917).unwrap(),
                    dag_core::PositionMethod::Gps,
                );
                pqc::sign_tx(tx, &key)
            })
            .collect()
    }

    /// Raw answers of one stream over loopback: (receipts, holders, stripe id) per answer.
    async fn raw_stream(
        addr: std::net::SocketAddr,
        txs: &[dag_core::SignedTx],
        slim: bool,
    ) -> Vec<(usize, usize, Vec<u8>)> {
        use futures::StreamExt;
        let mut raw = crate::pb::city_node_service_client::CityNodeServiceClient::connect(format!(
            "http://{addr}"
        ))
        .await
        .unwrap()
        .max_decoding_message_size(crate::MAX_RESPONSE_BYTES);
        let reqs: Vec<_> = txs
            .iter()
            .map(|t| crate::pb::SubmitTxStreamRequest {
                tx: Some(t.into()),
                slim_answers: slim,
            })
            .collect();
        let mut out = raw
            .submit_tx_stream(futures::stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(a) = out.next().await {
            let r = a.unwrap().result.unwrap();
            got.push((r.receipts.len(), r.holders.len(), r.stripe_id));
        }
        got
    }

    #[tokio::test]
    async fn a_stream_sends_each_stripes_receipts_once_and_the_client_fills_them_in() {
        use futures::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(
                    crate::CityNodeService::new(std::sync::Arc::new(Striped)).into_server(),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        let txs = txs(12);

        // Slim: 3 stripes, so 3 full answers and 9 references (stripe + 6 holders).
        let got = raw_stream(addr, &txs, true).await;
        assert_eq!(got.len(), 12);
        assert_eq!(got.iter().filter(|g| (g.0, g.1) == (6, 0)).count(), 3);
        assert_eq!(got.iter().filter(|g| (g.0, g.1) == (0, 6)).count(), 9);
        assert!(
            got.iter().all(|g| g.2.len() == 32),
            "every Held answer names its stripe"
        );
        // An old client (no slim_answers) gets every receipt every time.
        let got = raw_stream(addr, &txs, false).await;
        assert!(got.iter().all(|g| (g.0, g.1) == (6, 0)), "{got:?}");

        // The typed client asks for slim answers and still hands out every receipt.
        let client = crate::CityClient::connect(&addr.to_string()).await.unwrap();
        let mut answers = client
            .submit_stream(futures::stream::iter(txs.clone()))
            .await
            .unwrap();
        let mut n = 0;
        while let Some((i, a)) = answers.next().await {
            let a = a.unwrap();
            assert_eq!(a.tx_id, txs[i as usize].id());
            assert_eq!(*a.receipts, receipts(i as u8 / 4, 6));
            n += 1;
        }
        assert_eq!(n, 12);
        // Unary SubmitTx: full receipts.
        let one = client.submit(&txs[5]).await.unwrap();
        assert_eq!(*one.receipts, receipts(1, 6));
        server.abort();
        assert!(server.await.unwrap_err().is_cancelled());
    }

    #[test]
    fn stripe_of_needs_one_common_stripe() {
        assert_eq!(stripe_of(&[]), None);
        let a = receipts(1, 6);
        assert_eq!(stripe_of(&a), Some(StripeId::from_bytes([1; 32])));
        let mut mixed = a.clone();
        mixed[3].receipt.stripe_id = StripeId::from_bytes([2; 32]);
        assert_eq!(stripe_of(&mixed), None);
    }

    #[test]
    fn both_windows_forget_the_same_oldest_stripe() {
        let mut server = StripeWindow::new(2);
        let mut client = ReceiptWindow::new(2);
        for s in 1..=3u8 {
            let rs = Arc::new(receipts(s, 6));
            server.sent_in_full(rs[0].receipt.stripe_id, &rs);
            client.received_in_full(&rs);
            // Sending a stripe in the window again changes nothing.
            server.sent_in_full(rs[0].receipt.stripe_id, &rs);
            client.received_in_full(&rs);
        }
        let id = |s: u8| StripeId::from_bytes([s; 32]);
        assert!(!server.holds(&id(1), &receipts(1, 6)));
        assert!(server.holds(&id(2), &receipts(2, 6)) && server.holds(&id(3), &receipts(3, 6)));
        let h = holders(&receipts(1, 6));
        assert!(
            client.resolve(id(1), &h).is_err(),
            "stripe 1 left the window"
        );
        assert_eq!(*client.resolve(id(3), &h).unwrap(), receipts(3, 6));
    }

    #[test]
    fn a_stripe_whose_receipts_changed_goes_out_in_full_and_both_sides_take_the_new_ones() {
        let mut server = StripeWindow::new(2);
        let mut client = ReceiptWindow::new(2);
        let first = Arc::new(receipts(1, 6));
        let id = first[0].receipt.stripe_id;
        server.sent_in_full(id, &first);
        client.received_in_full(&first);
        // Re-replicated: shard 5 now on another node; then fewer receipts; then re-issued.
        let mut moved = receipts(1, 6);
        moved[5].receipt.holder = NodeId::from_bytes([200; 32]);
        let mut reissued = receipts(1, 6);
        reissued[0].receipt.time_ms = 2;
        for changed in [moved, receipts(1, 5), reissued] {
            assert!(
                !server.holds(&id, &changed),
                "a changed set is never referenced"
            );
            let changed = Arc::new(changed);
            server.sent_in_full(id, &changed);
            client.received_in_full(&changed);
            assert!(server.holds(&id, &changed));
            let back = client.resolve(id, &holders(&changed)).unwrap();
            assert!(
                Arc::ptr_eq(&back, &changed),
                "the client took the new receipts"
            );
        }
        // Replacing kept the stripe's place: two new stripes push it out on both sides.
        for s in 2..=3u8 {
            let rs = Arc::new(receipts(s, 6));
            server.sent_in_full(rs[0].receipt.stripe_id, &rs);
            client.received_in_full(&rs);
        }
        assert!(!server.holds(&id, &receipts(1, 6)));
        assert!(client.resolve(id, &holders(&receipts(1, 6))).is_err());
    }

    #[test]
    fn a_reference_must_name_the_holders_of_the_receipts_sent() {
        let mut client = ReceiptWindow::new(4);
        let rs = Arc::new(receipts(7, 6));
        client.received_in_full(&rs);
        let id = rs[0].receipt.stripe_id;
        let mut h = holders(&rs);
        let back = client.resolve(id, &h).unwrap();
        assert!(Arc::ptr_eq(&back, &rs), "shared, not copied");
        h.swap(0, 1);
        assert!(client.resolve(id, &h).is_err(), "order matters");
        assert!(client.resolve(id, &h[..5]).is_err(), "all holders");
        assert!(
            client
                .resolve(StripeId::from_bytes([8; 32]), &holders(&rs))
                .is_err(),
            "unknown stripe"
        );
    }
}
