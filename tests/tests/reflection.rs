//! gRPC reflection lists exactly the services of the role asked, in both protocol versions:
//! a v1 client (tonic-reflection's generated client) and Python's grpcio-reflection client
//! (`ProtoReflectionDescriptorDatabase`, v1alpha) against a devnet's city and light node.
//! The Python client runs from a venv cached under `~/.cache/citychain` (created with
//! `python3 -m venv` + pip from PyPI when missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use devnet::{Devnet, DevnetConfig};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const STANDARD: [&str; 3] = rpc::STANDARD_SERVICES;

fn set(names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .chain(STANDARD.iter())
        .map(|s| s.to_string())
        .collect()
}

/// The services `addr` lists over reflection v1.
async fn list_v1(addr: &str) -> BTreeSet<String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut out = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = out.message().await.unwrap().expect("one answer");
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{addr}: not a service list: {other:?}"),
    }
}

const GRPCIO: &str = "1.85.1";

/// The venv's python with grpcio-reflection, made when missing.
fn python() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    let venv = cache.join(format!("citychain/grpcio-reflection-{GRPCIO}"));
    let py = venv.join("bin/python");
    let ready = std::process::Command::new(&py)
        .args([
            "-c",
            "import grpc_reflection.v1alpha.proto_reflection_descriptor_database",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let _ = std::fs::remove_dir_all(&venv);
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "python3 -m venv failed (apt-get install -y python3-venv)"
        );
        let ok = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .arg(format!("grpcio=={GRPCIO}"))
            .arg(format!("grpcio-reflection=={GRPCIO}"))
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "pip install grpcio-reflection=={GRPCIO} failed (PyPI reachable?)"
        );
    }
    py
}

const CLIENT: &str = r#"
import sys, grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
for addr in sys.argv[1:]:
    with grpc.insecure_channel(addr) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        print(addr + " " + ",".join(sorted(db.get_services())))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_exactly_the_roles_services_in_v1_and_v1alpha() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DevnetConfig::default();
    let lights = cfg.lights;
    let net = Devnet::start(cfg, dir.path()).await.unwrap();
    assert!(net.wait_for_lights(lights, Duration::from_secs(30)).await);
    let city = net.city().addr().to_string();
    let light = net.lights[0]
        .server()
        .expect("light 0 runs")
        .addr()
        .to_string();
    let city_expected = if net.city().representative().is_some() {
        set(&[
            "citychain.v1.CityNodeService",
            "citychain.v1.ConsensusService",
            "citychain.v1.CrossCityService",
        ])
    } else {
        set(&["citychain.v1.CityNodeService"])
    };
    let light_expected = set(&[
        "citychain.v1.ShardStoreService",
        "citychain.v1.RepairService",
    ]);

    assert_eq!(list_v1(&city).await, city_expected, "city, reflection v1");
    assert_eq!(
        list_v1(&light).await,
        light_expected,
        "light, reflection v1"
    );

    let py = python();
    let (c, l) = (city.clone(), light.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .args(["-c", CLIENT, &c, &l])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcio reflection client: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = |addr: &str| -> BTreeSet<String> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{addr} ")))
            .unwrap_or_else(|| panic!("no answer for {addr}: {stdout}"));
        line.split(',').map(str::to_string).collect()
    };
    assert_eq!(listed(&city), city_expected, "city, grpcio v1alpha");
    assert_eq!(listed(&light), light_expected, "light, grpcio v1alpha");
}
