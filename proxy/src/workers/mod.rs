//! The supervisor of spawned worker processes.

pub mod supervisor;
