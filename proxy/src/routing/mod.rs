//! Pools of workers, the balancers that pick one, health checks and DNS discovery.

pub mod discovery;
pub mod h2c;
pub mod health;
pub mod pool;

pub use pool::{InflightGuard, Pool, Worker};
