//! aigentflow persistence (CP0): one façade over the workspace crates.
//!
//! * [`states`]: the workflow state machine (no I/O).
//!
//! The integration tests of the whole layer live in this package's `tests/`.

pub use aigentflow_core_states as states;
