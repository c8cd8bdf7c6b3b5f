-- Identity tables, SQLite flavour. Kept column-for-column in step with
-- migrations/postgres/0001_identity.sql (proxy/tests/store.rs checks this).
--
-- Representation rules shared with the PostgreSQL set (see docs/data.md):
--   * ids are TEXT holding a lowercase hyphenated UUID;
--   * instants are INTEGER unix seconds (UTC);
--   * lists (roles, scopes) are TEXT holding a JSON array of strings;
--   * opaque bytes are BLOB;
--   * booleans are INTEGER constrained to 0/1 (SQLite has no boolean type,
--     and sqlx's Any driver cannot read a column declared BOOLEAN).
-- Tables are STRICT so SQLite rejects values of the wrong type, as
-- PostgreSQL does.

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL COLLATE NOCASE UNIQUE,
    password_hash TEXT    NOT NULL,
    roles         TEXT    NOT NULL DEFAULT '[]',
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE refresh_tokens (
    id          TEXT    NOT NULL PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  TEXT    NOT NULL UNIQUE,
    family_id   TEXT    NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    replaced_by TEXT    REFERENCES refresh_tokens (id) ON DELETE SET NULL
) STRICT;
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL UNIQUE,
    scopes       TEXT    NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
) STRICT;
CREATE INDEX api_keys_user_idx ON api_keys (user_id);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);

CREATE TABLE service_credentials (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service    TEXT    NOT NULL,
    ciphertext BLOB    NOT NULL,
    nonce      BLOB    NOT NULL,
    key_id     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, service)
) STRICT;

-- private_key holds the PKCS#8 DER private key sealed by the caller with the
-- same envelope as service_credentials (AEAD ciphertext + nonce + key_id);
-- the store never sees it in the clear.
CREATE TABLE signing_keys (
    kid         TEXT    NOT NULL PRIMARY KEY,
    algorithm   TEXT    NOT NULL,
    private_key BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    key_id      TEXT    NOT NULL,
    public_jwk  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    not_after   INTEGER,
    retired_at  INTEGER
) STRICT;

-- No foreign key on user_id: the audit trail outlives the users it names.
CREATE TABLE audit_events (
    id      TEXT    NOT NULL PRIMARY KEY,
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    user_id TEXT,
    subject TEXT,
    ip      TEXT,
    detail  TEXT    NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX audit_events_at_idx ON audit_events (at);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, at);
