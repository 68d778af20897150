//! What the stores wrote, read and tampered with around them through the backend's own driver:
//! the `aigentflow-testkit` crate's, shared with the `aigentflow` command's tests.

pub use aigentflow_testkit::{stored_bytes, Driver, Raw};
