-- The same on both backends.
CREATE INDEX model_usage_by_task ON model_usage (task_id, recorded_at);
