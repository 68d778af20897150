-- Pollers read traces by cursor ("what is new since I last looked"), and a trace's id is a
-- random text that says nothing about order. feed_seq is the order a poller follows: every
-- trace gets the next number of the one-row trace_feed as it is inserted, so the numbers only
-- grow and are never handed out twice, even when the newest trace is deleted. SQLite's one
-- writer commits them in that order. A trace inserted with a number of its own (a copy of a
-- database, read in feed order) keeps it only when it follows every number handed out, and
-- moves the counter to it; a number, once given, never changes.
ALTER TABLE execution_traces ADD COLUMN feed_seq INTEGER;

-- The traces already there, in the order they were inserted.
UPDATE execution_traces SET feed_seq = rowid;
CREATE UNIQUE INDEX idx_execution_traces_feed ON execution_traces(feed_seq);

CREATE TABLE trace_feed (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_seq INTEGER NOT NULL
);
INSERT INTO trace_feed (singleton, last_seq)
    VALUES (1, (SELECT COALESCE(MAX(feed_seq), 0) FROM execution_traces));

CREATE TRIGGER trace_feed_forward BEFORE UPDATE ON trace_feed
    WHEN NEW.last_seq < OLD.last_seq OR NEW.singleton IS NOT OLD.singleton
BEGIN
    SELECT RAISE(ABORT, 'trace_feed only moves forward: UPDATE refused');
END;
CREATE TRIGGER trace_feed_no_delete BEFORE DELETE ON trace_feed
BEGIN
    SELECT RAISE(ABORT, 'trace_feed is the trace feed''s counter: DELETE refused');
END;

CREATE TRIGGER execution_traces_feed_given BEFORE INSERT ON execution_traces
    WHEN NEW.feed_seq IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'execution_traces.feed_seq only grows: a given number must follow trace_feed.last_seq')
        WHERE NEW.feed_seq <= (SELECT last_seq FROM trace_feed);
    UPDATE trace_feed SET last_seq = NEW.feed_seq;
END;
CREATE TRIGGER execution_traces_feed_next AFTER INSERT ON execution_traces
    WHEN NEW.feed_seq IS NULL
BEGIN
    UPDATE trace_feed SET last_seq = last_seq + 1;
    UPDATE execution_traces SET feed_seq = (SELECT last_seq FROM trace_feed)
        WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER execution_traces_feed_kept BEFORE UPDATE OF feed_seq ON execution_traces
    WHEN OLD.feed_seq IS NOT NULL AND NEW.feed_seq IS NOT OLD.feed_seq
BEGIN
    SELECT RAISE(ABORT, 'execution_traces.feed_seq never changes: UPDATE refused');
END;
