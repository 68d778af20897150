//! The aigentflow audit log: append-only, hash-chained, redacted, exported as CSV, JSON or JSON Lines.
//!
//! Not yet built; see the project's open issues.
