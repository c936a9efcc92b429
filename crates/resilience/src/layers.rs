//! The primitives as tower middleware: [`CircuitBreakerLayer`], [`TokenBucketLayer`],
//! [`RetryLayer`].

use crate::{
    BreakerError, CircuitBreaker, RetryBudget, RetryError, RetryPolicy, TokenBucket, retry,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{BoxError, Layer, Service, ServiceExt};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

// ---------------------------------------------------------------------------------------
// Circuit breaker

/// Wraps a service in a [`CircuitBreaker`]: every `Err` of the inner service is a failure;
/// an open circuit answers [`BreakerError::Open`] without calling it.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: CircuitBreaker,
}

impl CircuitBreakerLayer {
    /// A layer sharing `breaker` (clones of the breaker observe the same state).
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// Service produced by [`CircuitBreakerLayer`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
}

impl<S, Req> Service<Req> for CircuitBreakerService<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = BoxFuture<Result<S::Response, BreakerError<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Err(open) => Box::pin(async move { Err(BreakerError::Open(open)) }),
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    match fut.await {
                        Ok(r) => {
                            permit.success();
                            Ok(r)
                        }
                        Err(e) => {
                            permit.failure();
                            Err(BreakerError::Inner(e))
                        }
                    }
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Token bucket

/// What a [`TokenBucketService`] does when the bucket is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLimit {
    /// Wait for a token, then call.
    Wait,
    /// Fail at once with [`RateLimited`](crate::RateLimited) (boxed).
    Reject,
}

/// Rate-limits a service with a [`TokenBucket`].
#[derive(Debug, Clone)]
pub struct TokenBucketLayer {
    bucket: TokenBucket,
    on_limit: OnLimit,
}

impl TokenBucketLayer {
    /// A layer drawing from `bucket` (shared with its clones).
    pub fn new(bucket: TokenBucket, on_limit: OnLimit) -> Self {
        TokenBucketLayer { bucket, on_limit }
    }
}

impl<S> Layer<S> for TokenBucketLayer {
    type Service = TokenBucketService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TokenBucketService {
            inner,
            bucket: self.bucket.clone(),
            on_limit: self.on_limit,
        }
    }
}

/// Service produced by [`TokenBucketLayer`]. Errors are boxed: either the inner error or a
/// [`RateLimited`](crate::RateLimited).
#[derive(Debug, Clone)]
pub struct TokenBucketService<S> {
    inner: S,
    bucket: TokenBucket,
    on_limit: OnLimit,
}

impl<S, Req> Service<Req> for TokenBucketService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.on_limit {
            OnLimit::Reject => match self.bucket.try_acquire() {
                Err(limited) => Box::pin(async move { Err(BoxError::from(limited)) }),
                Ok(()) => {
                    let fut = self.inner.call(req);
                    Box::pin(async move { fut.await.map_err(Into::into) })
                }
            },
            OnLimit::Wait => {
                // The readied inner service is taken; a fresh clone stays for the next
                // poll_ready (the usual tower pattern for calls that wait before calling).
                let fresh = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, fresh);
                let bucket = self.bucket.clone();
                Box::pin(async move {
                    bucket.acquire().await;
                    ready.call(req).await.map_err(Into::into)
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Retry

/// Retries failed calls with a [`RetryPolicy`] and an optional shared [`RetryBudget`];
/// `retryable` decides which errors are worth another attempt. Requests must be `Clone`.
pub struct RetryLayer<E> {
    policy: RetryPolicy,
    budget: Option<RetryBudget>,
    retryable: Arc<dyn Fn(&E) -> bool + Send + Sync>,
}

impl<E> Clone for RetryLayer<E> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: self.policy,
            budget: self.budget.clone(),
            retryable: self.retryable.clone(),
        }
    }
}

impl<E> std::fmt::Debug for RetryLayer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<E> RetryLayer<E> {
    /// A retry layer.
    pub fn new(
        policy: RetryPolicy,
        budget: Option<RetryBudget>,
        retryable: impl Fn(&E) -> bool + Send + Sync + 'static,
    ) -> Self {
        RetryLayer {
            policy,
            budget,
            retryable: Arc::new(retryable),
        }
    }
}

impl<S, E> Layer<S> for RetryLayer<E> {
    type Service = RetryService<S, E>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service produced by [`RetryLayer`].
pub struct RetryService<S, E> {
    inner: S,
    layer: RetryLayer<E>,
}

impl<S: Clone, E> Clone for RetryService<S, E> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: std::fmt::Debug, E> std::fmt::Debug for RetryService<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, Req, E> Service<Req> for RetryService<S, E>
where
    S: Service<Req, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    E: Send + 'static,
    Req: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = RetryError<E>;
    type Future = BoxFuture<Result<S::Response, RetryError<E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(RetryError::Permanent)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fresh = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, fresh);
        let layer = self.layer.clone();
        Box::pin(async move {
            let retryable = layer.retryable.clone();
            retry(
                &layer.policy,
                layer.budget.as_ref(),
                move |e| retryable(e),
                move |_| {
                    let svc = svc.clone();
                    let req = req.clone();
                    async move { svc.oneshot(req).await }
                },
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CircuitBreakerConfig, CircuitState, Jitter, RateLimited, TokenBucketConfig};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;
    use tower::ServiceBuilder;

    #[tokio::test(start_paused = true)]
    async fn breaker_layer_opens_and_rejects() {
        let breaker = CircuitBreaker::new(CircuitBreakerConfig {
            max_failures: 2,
            reset_timeout: Duration::from_secs(10),
            half_open_probes: 1,
        });
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let mut svc = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .service_fn(move |_: ()| {
                c.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("boom") }
            });
        for _ in 0..2 {
            let r = svc.ready().await.unwrap().call(()).await;
            assert!(matches!(r, Err(BreakerError::Inner("boom"))));
        }
        let r = svc.ready().await.unwrap().call(()).await;
        assert!(matches!(r, Err(BreakerError::Open(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_layer_rejects_or_waits() {
        let cfg = TokenBucketConfig {
            rate_per_sec: 1.0,
            burst: 2,
        };
        let mut reject = ServiceBuilder::new()
            .layer(TokenBucketLayer::new(
                TokenBucket::new(cfg),
                OnLimit::Reject,
            ))
            .service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
        for _ in 0..2 {
            reject.ready().await.unwrap().call(()).await.unwrap();
        }
        let e = reject.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(e.downcast_ref::<RateLimited>().is_some());

        let mut wait = ServiceBuilder::new()
            .layer(TokenBucketLayer::new(TokenBucket::new(cfg), OnLimit::Wait))
            .service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            wait.ready().await.unwrap().call(()).await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_layer_retries_retryable_errors() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            jitter: Jitter::None,
        };
        let mut svc = ServiceBuilder::new()
            .layer(RetryLayer::new(policy, None, |e: &&str| *e == "503"))
            .service_fn(move |x: u32| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move { if n < 2 { Err("503") } else { Ok(x * 2) } }
            });
        assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
