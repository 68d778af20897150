-- The audit log is appended to far more often than it is read by task or by category alone.
-- Each index costs every append a page write, and these two are the expensive ones: task_id
-- sends each append to a random leaf (one per task), and the five-valued category index splits
-- five leaves in turn. Without them an append writes only pages at the ends of its indexes:
-- at 100k rows (BENCHMARKS.md W2) 106 -> 70 us per entry on its own and 38 -> 10 us batched.
-- Reads by task or category use the project index when a project is given, else scan, as the
-- seed's schema did for task.
DROP INDEX IF EXISTS idx_audit_logs_task;
DROP INDEX IF EXISTS idx_audit_logs_category;
