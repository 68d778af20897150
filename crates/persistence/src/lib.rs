//! The SQLite foundation of aigentflow.
