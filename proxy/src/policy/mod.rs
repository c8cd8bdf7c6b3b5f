//! Authorization beyond the route: per-tool rules by role, enforced on `tools/call` and
//! applied to `tools/list` answers.

pub mod tools;
