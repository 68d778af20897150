//! Execution traces, agent invocations, per-agent metrics and crash recovery for aigentflow.
//!
//! Not yet built; see the project's open issues.
