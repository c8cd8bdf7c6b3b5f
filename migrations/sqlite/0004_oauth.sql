-- OAuth 2.1 authorization server tables, SQLite flavour. Kept column-for-column in step
-- with migrations/postgres/0004_oauth.sql (proxy/tests/store.rs checks this).
-- Same representation rules as 0001 (ids TEXT, instants INTEGER unix seconds, lists as
-- JSON arrays in TEXT, booleans as 0/1 INTEGER).

-- Clients registered by dynamic client registration (RFC 7591). Public clients only:
-- no secret is issued. Clients identified by a client-id metadata document are not
-- stored here (their document is fetched and cached instead).
CREATE TABLE oauth_clients (
    client_id     TEXT    NOT NULL PRIMARY KEY,
    client_name   TEXT    NOT NULL,
    redirect_uris TEXT    NOT NULL,
    client_uri    TEXT,
    created_at    INTEGER NOT NULL
) STRICT;

-- Authorization codes, stored by the SHA-256 of the code. A row starts as a pending
-- consent (approved = 0, keyed by the hash of a one-time consent ticket) or directly as
-- an approved code; it is single use (used_at) and short-lived (expires_at).
CREATE TABLE oauth_codes (
    code_hash      TEXT    NOT NULL PRIMARY KEY,
    client_id      TEXT    NOT NULL,
    user_id        TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri   TEXT    NOT NULL,
    code_challenge TEXT    NOT NULL,
    resource       TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    state          TEXT,
    approved       INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    family_id      TEXT
) STRICT;
CREATE INDEX oauth_codes_expires_idx ON oauth_codes (expires_at);

-- Consent a user gave a client (remembered: the consent page is skipped next time for
-- the same or fewer scopes).
CREATE TABLE oauth_consents (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) STRICT;

-- Refresh-token families (in refresh_tokens) that belong to an OAuth grant: which client
-- and resource they were issued for, so a refresh keeps the token bound to them and a
-- revoked consent revokes them.
CREATE TABLE oauth_grants (
    family_id  TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT    NOT NULL,
    resource   TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX oauth_grants_user_client_idx ON oauth_grants (user_id, client_id);
