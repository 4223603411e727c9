-- The invariants live in the schema, so they hold even when a distributed lock is lost
-- (lease expiry, a Redis node failing over, a paused process):
--   issued_quantity never exceeds total_quantity and never goes negative (CHECKs);
--   one wallet row per (coupon, user) (UNIQUE);
--   a write under a stale lock grant is refused (fence_token, see repository.Issue).
CREATE TABLE coupon (
    id              uuid        PRIMARY KEY,
    code            text        NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9_-]{1,64}$'),
    name            text        NOT NULL,
    discount_amount bigint      NOT NULL CHECK (discount_amount >= 0),
    total_quantity  int         NOT NULL CHECK (total_quantity >= 0),
    issued_quantity int         NOT NULL DEFAULT 0,
    -- The highest lock fencing token that wrote this row; a lower one is a stale holder.
    fence_token     bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupon_issued_nonnegative CHECK (issued_quantity >= 0),
    CONSTRAINT coupon_issued_within_total CHECK (issued_quantity <= total_quantity)
);

CREATE TABLE coupon_wallet (
    id        uuid        PRIMARY KEY,
    coupon_id uuid        NOT NULL REFERENCES coupon (id),
    user_id   uuid        NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT coupon_wallet_coupon_user_key UNIQUE (coupon_id, user_id)
);

CREATE INDEX coupon_wallet_user_idx ON coupon_wallet (user_id, issued_at);
