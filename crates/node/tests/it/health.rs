//! gRPC health reflects reality, over loopback: a city that knows fewer than k live light
//! nodes says NOT_SERVING (a submission could not become Held), SERVING once k are live,
//! and NOT_SERVING again from the shutdown signal on, before its calls drain (seen on a
//! `Watch` stream opened before the signal).

use crate::info;
use node::{
    CityConfig, CityParts, GrpcTransport, LightConfig, PipelineConfig, StaticDirectory,
    StorageParts, start_city_with, start_light,
};
use pqc::Keypair;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as S;
use tonic_health::pb::health_client::HealthClient;

const SVC: &str = "citychain.v1.CityNodeService";

async fn status(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> S {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// Polls until health says `want` (the holder count is re-read every 250 ms).
async fn wait_for(client: &mut HealthClient<tonic::transport::Channel>, want: S) {
    for _ in 0..200 {
        if status(client, SVC).await == want && status(client, "").await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never said {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_serves_only_with_k_live_holders_and_not_while_stopping() {
    let k = usize::from(PipelineConfig::default().erasure.k);
    let dirs: Vec<_> = (0..k).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut lights = Vec::new();
    for d in &dirs {
        let cfg = LightConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: d.path().to_path_buf(),
            quota_bytes: 1 << 30,
            ..LightConfig::default()
        };
        lights.push(start_light(&cfg, Keypair::generate()).await.unwrap());
    }
    let infos: Vec<_> = lights.iter().enumerate().map(|(i, h)| info(h, i)).collect();
    // One short of k at start.
    let directory = Arc::new(StaticDirectory::new(infos[..k - 1].to_vec()));
    let city_dir = tempfile::tempdir().unwrap();
    let cfg = CityConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: city_dir.path().to_path_buf(),
        verify_threads: 1,
        ..CityConfig::default()
    };
    let parts = CityParts {
        storage: Some(StorageParts {
            transport: Arc::new(GrpcTransport::default()),
            directory: directory.clone(),
            config: PipelineConfig::default(),
        }),
        ..CityParts::default()
    };
    let city = start_city_with(&cfg, &Keypair::generate(), parts)
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", city.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    // The first answer is already right: k - 1 live holders.
    assert_eq!(status(&mut client, SVC).await, S::NotServing);
    assert_eq!(status(&mut client, "").await, S::NotServing);

    directory.add(infos[k - 1].clone());
    wait_for(&mut client, S::Serving).await;

    directory.remove(&infos[0].node_id);
    wait_for(&mut client, S::NotServing).await;
    directory.add(infos[0].clone());
    wait_for(&mut client, S::Serving).await;

    // Stopping: a Watch stream opened before the signal sees NOT_SERVING while the server
    // still drains (the stream itself is a call in flight).
    let mut watch = client
        .watch(HealthCheckRequest {
            service: SVC.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), S::Serving);
    let stopping = tokio::spawn(city.shutdown());
    let next = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("a health update during shutdown")
        .unwrap()
        .expect("the stream is still open while draining");
    assert_eq!(next.status(), S::NotServing);
    drop(watch);
    drop(client);
    stopping.await.unwrap().unwrap();
    for l in lights {
        l.shutdown().await.unwrap();
    }
}
