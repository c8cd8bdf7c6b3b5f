-- Access tokens of a user issued at or before `not_before` (unix seconds) are refused:
-- set on logout, role change and disable, so those take effect before the tokens expire.
CREATE TABLE token_cutoffs (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    not_before BIGINT NOT NULL
);
ALTER TABLE token_cutoffs ENABLE ROW LEVEL SECURITY;
