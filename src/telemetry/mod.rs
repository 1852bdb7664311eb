//! What an operator sees of a running worker: Prometheus metrics, liveness and readiness
//! probes on one HTTP listener, OpenTelemetry traces carried through NATS headers, and logs.
//!
//! Other modules call in through small hooks: [`metrics()`] where work is counted or timed,
//! [`trace`] where a message is received, a minibatch runs or a reply is published, and
//! [`Health`] where the serve command starts and stops.

pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod otel;
pub(crate) mod trace;

pub(crate) use health::Health;
pub use logging::{init, LogFormat, TelemetryGuard};
pub(crate) use metrics::{metrics, JetStreamAck, Transport};
