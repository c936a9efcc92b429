//! The gRPC methods this workspace's servers serve, read once from the compiled file
//! descriptor sets (City Chain's own, gRPC health and reflection): what metrics may use as
//! label values, so a client sending random paths cannot grow a label set without bound.

use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Service → its methods, e.g. `citychain.v1.CityNodeService` → {`SubmitTx`, …}.
type Served = HashMap<&'static str, HashSet<&'static str>>;

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let mut out = Served::new();
        for set in [
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(files) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for f in files.file {
                let package = f.package.unwrap_or_default();
                for s in f.service {
                    let name = s.name.unwrap_or_default();
                    let service = if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    };
                    // Leaked once: a fixed, small set (the methods compiled in).
                    let service: &'static str = Box::leak(service.into_boxed_str());
                    let methods = out.entry(service).or_default();
                    for m in s.method {
                        let method: &'static str =
                            Box::leak(m.name.unwrap_or_default().into_boxed_str());
                        methods.insert(method);
                    }
                }
            }
        }
        out
    })
}

/// The served `(service, method)` a request path names (`/<service>/<method>`), or `None`
/// for any other path.
pub fn served_method(path: &str) -> Option<(&'static str, &'static str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (service, methods) = served().get_key_value(service)?;
    Some((service, methods.get(method)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_are_known_and_anything_else_is_not() {
        assert_eq!(
            served_method("/citychain.v1.CityNodeService/SubmitTx"),
            Some(("citychain.v1.CityNodeService", "SubmitTx"))
        );
        assert_eq!(
            served_method("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        assert!(
            served_method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_some()
        );
        for bad in [
            "/citychain.v1.CityNodeService/NoSuchMethod",
            "/random-1234/Whatever",
            "/citychain.v1.CityNodeService/SubmitTx/extra",
            "/",
            "",
            "no-slash",
        ] {
            assert_eq!(served_method(bad), None, "{bad}");
        }
    }
}
