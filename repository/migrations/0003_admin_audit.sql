-- The admin audit trail: one row per admin change (a coupon created or changed, a schedule
-- created), written in the change's own transaction, so a change without its row, or a row
-- without its change, cannot be committed. before/after are the changed row as stored
-- (to_jsonb), before is NULL for a creation. actor names the credential without revealing it
-- ("admin-token:" and the first 8 hex digits of the token's SHA-256), never the token itself.
-- Applied once under the migrations' advisory lock like every migration; IF NOT EXISTS keeps
-- it harmless should the table have been made by hand.
CREATE TABLE IF NOT EXISTS admin_audit (
    id         uuid        PRIMARY KEY,            -- UUIDv7: time-ordered
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    source     text        NOT NULL,
    request_id text        NOT NULL,
    action     text        NOT NULL,
    target     text        NOT NULL,
    before     jsonb,
    after      jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_audit_at_idx ON admin_audit (at DESC, id DESC);
