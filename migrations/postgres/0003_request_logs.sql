-- One row per request the gateway handled (see docs/logging.md). `request_id` is unique: the
-- log pipeline delivers at least once and inserts with ON CONFLICT DO NOTHING, so a replayed
-- batch never makes a second row. Times are unix milliseconds, durations microseconds.
CREATE TABLE request_logs (
    request_id       TEXT   PRIMARY KEY,
    at               BIGINT NOT NULL,
    user_id          TEXT,
    api_key_id       TEXT,
    client_ip        TEXT,
    user_agent       TEXT,
    route            TEXT,
    pool             TEXT,
    worker           TEXT,
    http_method      TEXT   NOT NULL,
    rpc_method       TEXT,
    tool             TEXT,
    session_hash     TEXT,
    protocol_version TEXT,
    status           BIGINT NOT NULL,
    rpc_error        BIGINT,
    latency_us       BIGINT NOT NULL,
    upstream_us      BIGINT,
    bytes_in         BIGINT NOT NULL,
    bytes_out        BIGINT NOT NULL,
    rate_limit       TEXT,
    auth             TEXT   NOT NULL,
    error            TEXT,
    request_body     TEXT,
    response_body    TEXT
);
CREATE INDEX request_logs_at_idx ON request_logs (at);
CREATE INDEX request_logs_user_idx ON request_logs (user_id, at);
CREATE INDEX request_logs_tool_idx ON request_logs (tool, at);
ALTER TABLE request_logs ENABLE ROW LEVEL SECURITY;
