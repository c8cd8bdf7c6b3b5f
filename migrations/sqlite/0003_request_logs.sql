-- One row per request the gateway handled (see docs/logging.md). `request_id` is unique: the
-- log pipeline delivers at least once and inserts with ON CONFLICT DO NOTHING, so a replayed
-- batch never makes a second row. Times are unix milliseconds, durations microseconds.
CREATE TABLE request_logs (
    request_id       TEXT    NOT NULL PRIMARY KEY,
    at               INTEGER NOT NULL,
    user_id          TEXT,
    api_key_id       TEXT,
    client_ip        TEXT,
    user_agent       TEXT,
    route            TEXT,
    pool             TEXT,
    worker           TEXT,
    http_method      TEXT    NOT NULL,
    rpc_method       TEXT,
    tool             TEXT,
    session_hash     TEXT,
    protocol_version TEXT,
    status           INTEGER NOT NULL,
    rpc_error        INTEGER,
    latency_us       INTEGER NOT NULL,
    upstream_us      INTEGER,
    bytes_in         INTEGER NOT NULL,
    bytes_out        INTEGER NOT NULL,
    rate_limit       TEXT,
    auth             TEXT    NOT NULL,
    error            TEXT,
    request_body     TEXT,
    response_body    TEXT
) STRICT;
CREATE INDEX request_logs_at_idx ON request_logs (at);
CREATE INDEX request_logs_user_idx ON request_logs (user_id, at);
CREATE INDEX request_logs_tool_idx ON request_logs (tool, at);
