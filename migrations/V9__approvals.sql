-- Durable approvals (crate aigentflow-approvals): a request for a person's decision on a task
-- waiting at AWAITING_APPROVAL, with its deadline, and the decision once made. A request, and
-- its decision or expiry, is written in one transaction with the task's transition and its
-- audit entry, so this table and the task's state always agree.
--
-- status: 'pending' until decided; 'approved' or 'rejected' by a reviewer (APPROVE / REJECT);
-- 'expired' when its deadline passed with no decision (APPROVAL_TIMEOUT). decided_at is set
-- exactly when the status is no longer pending. deadline NULL: the request waits for ever.
-- Timestamps in the stored form 'YYYY-MM-DD HH:MM:SS.SSS' UTC; payload is JSON text.
-- A task has at most one pending request (the partial unique index); deleting the task deletes
-- its requests, as it deletes its transitions and checkpoints (the audit log keeps their story).
CREATE TABLE approval_requests (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    deadline TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    reviewer TEXT,
    comment TEXT,
    decided_at TEXT,
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    FOREIGN KEY (task_id) REFERENCES workflow_states(task_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX idx_approval_requests_one_pending
    ON approval_requests(task_id) WHERE status = 'pending';
CREATE INDEX idx_approval_requests_task ON approval_requests(task_id, requested_at);
CREATE INDEX idx_approval_requests_due
    ON approval_requests(deadline) WHERE status = 'pending';
