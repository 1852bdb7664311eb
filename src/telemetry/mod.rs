//! What an operator sees of a running worker: Prometheus metrics, liveness and readiness
//! probes on one HTTP listener, OpenTelemetry traces carried through NATS headers, and logs.
//!
//! Other modules call in through small hooks: [`metrics()`] where work is counted or timed,
//! [`trace`] where a message is received, a minibatch runs or a reply is published, and
//! [`Health`] where the serve command starts and stops.

pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod trace;

pub use health::Health;
pub use logging::{init, LogFormat, TelemetryGuard};
pub use metrics::{metrics, JetStreamAck, Transport};
