-- Campaigns: issuing windows, validity, redemption and daily schedules.

-- A coupon is issued from opens_at until closes_at (none: no end) unless paused. Coupons that
-- existed before this migration (the demo tiers) stay open: their window starts at creation.
-- valid_days and min_order_amount are fixed at creation (the admin API cannot change them), so
-- every wallet entry's expiry is computed once, when it is issued.
ALTER TABLE coupon
    ADD COLUMN opens_at         timestamptz,
    ADD COLUMN closes_at        timestamptz,
    ADD COLUMN valid_days       int     NOT NULL DEFAULT 30 CHECK (valid_days BETWEEN 1 AND 3650),
    ADD COLUMN min_order_amount bigint  NOT NULL DEFAULT 0 CHECK (min_order_amount >= 0),
    ADD COLUMN paused           boolean NOT NULL DEFAULT false;
UPDATE coupon SET opens_at = created_at;
ALTER TABLE coupon
    ALTER COLUMN opens_at SET DEFAULT now(),
    ALTER COLUMN opens_at SET NOT NULL,
    ADD CONSTRAINT coupon_window_order CHECK (closes_at IS NULL OR closes_at > opens_at);

-- A daily coupon: each local day's coupon PREFIX-YYYYMMDD opens at open_minute past local
-- midnight in time_zone (IANA) and closes when the next day's opens.
CREATE TABLE coupon_schedule (
    id               uuid        PRIMARY KEY,
    -- PREFIX-YYYYMMDD must still be a valid coupon code (64 characters at most).
    code_prefix      text        NOT NULL UNIQUE CHECK (code_prefix ~ '^[A-Za-z0-9_-]{1,55}$'),
    name             text        NOT NULL,
    open_minute      int         NOT NULL CHECK (open_minute BETWEEN 0 AND 1439),
    time_zone        text        NOT NULL,
    quantity_per_day int         NOT NULL CHECK (quantity_per_day >= 0),
    discount_amount  bigint      NOT NULL CHECK (discount_amount >= 0),
    valid_days       int         NOT NULL CHECK (valid_days BETWEEN 1 AND 3650),
    min_order_amount bigint      NOT NULL CHECK (min_order_amount >= 0),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Exactly one coupon per schedule and local day, whatever the number of pods materialising.
ALTER TABLE coupon
    ADD COLUMN schedule_id  uuid REFERENCES coupon_schedule (id),
    ADD COLUMN schedule_day date,
    ADD CONSTRAINT coupon_schedule_day_key UNIQUE (schedule_id, schedule_day);

-- Validity and redemption. expires_at = issued_at + valid_days days (of 24 hours), set by the
-- trigger below on every insert, whoever inserts. A redeemed entry records its order; the
-- redemption is the one UPDATE that finds redeemed_at NULL.
ALTER TABLE coupon_wallet
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN redeemed_at  timestamptz,
    ADD COLUMN order_id     text,
    ADD COLUMN order_amount bigint,
    ADD CONSTRAINT coupon_wallet_redemption CHECK (
        (redeemed_at IS NULL AND order_id IS NULL AND order_amount IS NULL) OR
        (redeemed_at IS NOT NULL AND order_id IS NOT NULL AND order_amount >= 0));
UPDATE coupon_wallet w SET expires_at = w.issued_at + c.valid_days * interval '24 hours'
  FROM coupon c WHERE c.id = w.coupon_id;
ALTER TABLE coupon_wallet ALTER COLUMN expires_at SET NOT NULL;

CREATE FUNCTION coupon_wallet_set_expiry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.expires_at IS NULL THEN
        SELECT NEW.issued_at + c.valid_days * interval '24 hours' INTO NEW.expires_at
          FROM coupon c WHERE c.id = NEW.coupon_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER coupon_wallet_expiry BEFORE INSERT ON coupon_wallet
    FOR EACH ROW EXECUTE FUNCTION coupon_wallet_set_expiry();
