//! Per-client rate limiting of the API: each caller (its principal when its credentials hold,
//! else its address) gets `api.rate_limit_per_second` requests a second with bursts of
//! `api.rate_limit_burst`; beyond that, 429 with `Retry-After`. A token bucket per client
//! (governor's GCRA); idle clients are forgotten every minute, so the table stays small.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::auth::Auth;
use super::error::ApiError;

#[derive(Clone)]
pub struct Limiter {
    buckets: Arc<DefaultKeyedRateLimiter<String>>,
    auth: Arc<Auth>,
}

impl Limiter {
    /// `None` when limiting is off (a rate of 0).
    pub fn new(per_second: u32, burst: u32, auth: Arc<Auth>) -> Option<Limiter> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
        Some(Limiter {
            buckets: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            auth,
        })
    }

    /// Forgets clients whose bucket is full again.
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}

/// Who counts as one client: the caller its credentials name, else the address it calls from
/// (so invalid credentials cannot make up new clients).
fn client_of(limiter: &Limiter, req: &Request) -> String {
    if let Some(p) = limiter.auth.identify(req.headers()) {
        return p.name;
    }
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(a)) => format!("ip:{}", a.ip()),
        None => "ip:unknown".into(),
    }
}

pub async fn limit(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    let client = client_of(&limiter, &req);
    match limiter.buckets.check_key(&client) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + 1;
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from {client}: try again in {secs} s"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}
