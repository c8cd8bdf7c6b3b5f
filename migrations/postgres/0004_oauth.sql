-- OAuth 2.1 authorization server tables, PostgreSQL flavour. Kept column-for-column in
-- step with migrations/sqlite/0004_oauth.sql (proxy/tests/store.rs checks this).
-- Same representation rules as 0001 (ids TEXT, instants BIGINT unix seconds, lists as
-- JSON arrays in TEXT, the flag a BOOLEAN here and a 0/1 INTEGER in SQLite).

-- Clients registered by dynamic client registration (RFC 7591). Public clients only.
CREATE TABLE oauth_clients (
    client_id     TEXT   PRIMARY KEY,
    client_name   TEXT   NOT NULL,
    redirect_uris TEXT   NOT NULL,
    client_uri    TEXT,
    created_at    BIGINT NOT NULL
);

-- Authorization codes (and pending consents), stored by the SHA-256 of the code.
CREATE TABLE oauth_codes (
    code_hash      TEXT    PRIMARY KEY,
    client_id      TEXT    NOT NULL,
    user_id        TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri   TEXT    NOT NULL,
    code_challenge TEXT    NOT NULL,
    resource       TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    state          TEXT,
    approved       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,
    used_at        BIGINT,
    family_id      TEXT
);
CREATE INDEX oauth_codes_expires_idx ON oauth_codes (expires_at);

-- Consent a user gave a client.
CREATE TABLE oauth_consents (
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Refresh-token families that belong to an OAuth grant.
CREATE TABLE oauth_grants (
    family_id  TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX oauth_grants_user_client_idx ON oauth_grants (user_id, client_id);

ALTER TABLE oauth_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_consents ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_grants ENABLE ROW LEVEL SECURITY;
