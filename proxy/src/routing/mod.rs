//! Pools of workers, the balancers that pick one, and health checks.

pub mod health;
pub mod pool;

pub use pool::{InflightGuard, Pool, Worker};
