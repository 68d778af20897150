//! Lessons learned by aigentflow agents, searchable with SQLite FTS5.
//!
//! Not yet built; see the project's open issues.
