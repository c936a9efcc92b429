//! gRPC server metrics per method and status code, as one tower layer
//! ([`GrpcMetricsLayer`]) outermost on every node server (so calls the budgets refuse are
//! counted too):
//!
//! - `citychain_grpc_server_requests_total{service, method, code}`: calls finished, by the
//!   gRPC status code the server answered (`OK`, `NOT_FOUND`, … as in grpc's
//!   `Code` names, upper snake case);
//! - `citychain_grpc_server_handling_seconds{service, method}`: from the request's arrival
//!   to the end of the response (its trailers: a stream's whole life), in the explicit
//!   `*_seconds` buckets.
//!
//! The code is read where gRPC puts it: the `grpc-status` header of a trailers-only answer
//! (every immediate refusal) or the trailers at the end of the body. A response body
//! dropped before its trailers (the client went away) counts as `CANCELLED`. Only the
//! methods the workspace serves ([`rpc::methods::served_method`], read from the compiled
//! descriptors) become label values; any other path is counted under service and method
//! `unknown`, so random paths from a client cannot grow the label set, and a call's labels
//! are `&'static str` (no allocation per call).

use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::body::Body;

/// The layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (service, method) = service_and_method(req.uri().path());
        let call = Call {
            service,
            method,
            started: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let mut call = call;
            // A trailers-only answer (an immediate refusal) has its code in the headers.
            if let Some(code) = header_code(resp.headers()) {
                call.finish(code);
            }
            let (parts, body) = resp.into_parts();
            Ok(http::Response::from_parts(
                parts,
                Body::new(MeteredBody { inner: body, call }),
            ))
        })
    }
}

/// `/citychain.v1.CityNodeService/SubmitTx` → (`citychain.v1.CityNodeService`, `SubmitTx`);
/// a path that names no served method → (`unknown`, `unknown`).
fn service_and_method(path: &str) -> (&'static str, &'static str) {
    rpc::methods::served_method(path).unwrap_or(("unknown", "unknown"))
}

fn header_code(h: &http::HeaderMap) -> Option<tonic::Code> {
    let v = h
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from_i32(v))
}

/// The label of a gRPC code: grpc's upper snake case name.
pub fn code_label(c: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match c {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One call being measured; records exactly once.
struct Call {
    service: &'static str,
    method: &'static str,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        metrics::counter!(
            "citychain_grpc_server_requests_total",
            "service" => self.service,
            "method" => self.method,
            "code" => code_label(code),
        )
        .increment(1);
        metrics::histogram!(
            "citychain_grpc_server_handling_seconds",
            "service" => self.service,
            "method" => self.method,
        )
        .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body went away before its trailers: the client cancelled (or the server was
        // killed mid-call).
        self.finish(tonic::Code::Cancelled);
    }
}

/// The response body, watched for its trailers.
struct MeteredBody {
    inner: Body,
    call: Call,
}

impl http_body::Body for MeteredBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(header_code) {
                    this.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.finish(status.code()),
            // The end of a body without trailers: a trailers-only answer (recorded from
            // its headers) or a plain HTTP answer; either way nothing more will come.
            Poll::Ready(None) => this.call.finish(tonic::Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_served_methods_become_labels() {
        assert_eq!(
            service_and_method("/citychain.v1.ShardStoreService/PutShard"),
            ("citychain.v1.ShardStoreService", "PutShard")
        );
        // Malformed paths and well-formed paths naming nothing served alike: random paths
        // from a client must not grow the label set.
        for bad in [
            "",
            "/",
            "/x",
            "/x/",
            "//m",
            "/a/b/c",
            "/citychain.v1.ShardStoreService/NoSuchMethod",
            "/random-7f3a/Method",
        ] {
            assert_eq!(service_and_method(bad), ("unknown", "unknown"), "{bad}");
        }
    }

    /// Calls to a real node server (built by `server_builder`, served by `serve`) on
    /// loopback show up per method and code, with the handling-time histogram.
    #[test]
    fn a_served_call_is_counted_with_its_method_and_code() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                crate::metrics_catalog::LATENCY_BUCKETS,
            )
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        // One thread: the server's tasks record into this thread's local recorder.
        let _guard = metrics::set_default_local_recorder(&recorder);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (listener, addr) = crate::runtime::bind(([127, 0, 0, 1], 0).into())
                .await
                .unwrap();
            let (health, v1, v1alpha) =
                crate::runtime::health_and_reflection("citychain.v1.ShardStoreService", &[])
                    .await
                    .unwrap();
            let router = crate::runtime::server_builder(true)
                .add_service(health)
                .add_service(v1)
                .add_service(v1alpha);
            let server = crate::runtime::serve(
                listener,
                router,
                "metrics-test",
                &rpc::tls::LinkSecurity::Insecure,
            );
            let mut client = tonic_health::pb::health_client::HealthClient::new(
                tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
            let check = |service: &str| tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            };
            client
                .check(check("citychain.v1.ShardStoreService"))
                .await
                .unwrap();
            client.check(check("")).await.unwrap();
            let refused = client.check(check("no.such.Service")).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::NotFound);
            drop(client);
            server
                .shutdown(std::time::Duration::from_secs(5))
                .await
                .unwrap();
        });
        let text = handle.render();
        let line = |code: &str, n: u32| {
            format!(
                "citychain_grpc_server_requests_total{{service=\"grpc.health.v1.Health\",method=\"Check\",code=\"{code}\"}} {n}"
            )
        };
        assert!(text.contains(&line("OK", 2)), "{text}");
        assert!(text.contains(&line("NOT_FOUND", 1)), "{text}");
        assert!(
            text.contains(
                "citychain_grpc_server_handling_seconds_count{service=\"grpc.health.v1.Health\",method=\"Check\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("citychain_grpc_server_handling_seconds_bucket{service=\"grpc.health.v1.Health\",method=\"Check\",le=\"30\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn every_code_has_its_grpc_name() {
        for i in 0..=16 {
            let c = tonic::Code::from_i32(i);
            let label = code_label(c);
            assert!(label.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        assert_eq!(code_label(tonic::Code::from_i32(5)), "NOT_FOUND");
    }
}
