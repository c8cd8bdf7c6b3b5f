-- Identity tables, PostgreSQL flavour. Kept column-for-column in step with
-- migrations/sqlite/0001_identity.sql (proxy/tests/store.rs checks this).
--
-- Representation rules shared with the SQLite set (see docs/data.md):
--   * ids are TEXT holding a lowercase hyphenated UUID;
--   * instants are BIGINT unix seconds (UTC);
--   * lists (roles, scopes) are TEXT holding a JSON array of strings;
--   * opaque bytes are BYTEA;
--   * the only native boolean, users.disabled, is BOOLEAN here and a 0/1
--     INTEGER in SQLite.
-- Tables are created unqualified, in the first schema of search_path.

CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    email         TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    roles         TEXT    NOT NULL DEFAULT '[]',
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
-- Case-insensitive uniqueness; lookups use lower(email) to hit this index.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE refresh_tokens (
    id          TEXT   PRIMARY KEY,
    user_id     TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  TEXT   NOT NULL UNIQUE,
    family_id   TEXT   NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    replaced_by TEXT   REFERENCES refresh_tokens (id) ON DELETE SET NULL
);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    id           TEXT   PRIMARY KEY,
    user_id      TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT   NOT NULL,
    prefix       TEXT   NOT NULL,
    key_hash     TEXT   NOT NULL UNIQUE,
    scopes       TEXT   NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);

CREATE TABLE service_credentials (
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service    TEXT   NOT NULL,
    ciphertext BYTEA  NOT NULL,
    nonce      BYTEA  NOT NULL,
    key_id     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, service)
);

-- private_key holds the PKCS#8 DER private key sealed by the caller with the
-- same envelope as service_credentials (AEAD ciphertext + nonce + key_id);
-- the store never sees it in the clear.
CREATE TABLE signing_keys (
    kid         TEXT   PRIMARY KEY,
    algorithm   TEXT   NOT NULL,
    private_key BYTEA  NOT NULL,
    nonce       BYTEA  NOT NULL,
    key_id      TEXT   NOT NULL,
    public_jwk  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    not_after   BIGINT,
    retired_at  BIGINT
);

-- No foreign key on user_id: the audit trail outlives the users it names.
CREATE TABLE audit_events (
    id      TEXT   PRIMARY KEY,
    at      BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    user_id TEXT,
    subject TEXT,
    ip      TEXT,
    detail  TEXT   NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at_idx ON audit_events (at);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, at);

-- Row level security with no policy: roles other than the owner (and
-- superusers / BYPASSRLS roles) see no rows. On Supabase this keeps these
-- tables out of reach of the anon/authenticated roles of the Data API even
-- when they sit in an exposed schema; the gateway connects as the owner.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE service_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
