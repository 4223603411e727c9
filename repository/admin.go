package repository

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// CouponsByCodes returns the coupons with those codes (those that exist), in no order.
func (r *Repository) CouponsByCodes(ctx context.Context, codes []string) ([]domain.Coupon, error) {
	return collect(ctx, r, "coupons by codes", `SELECT `+couponColumns+` FROM coupon WHERE code = ANY ($1)`, couponRow, codes)
}

// UpdateCoupon changes coupon code in one transaction: it locks the row, lets apply change the
// copy (apply's error aborts the change and is returned as is), and stores the window, the
// pause and the stock. The schema refuses a stock below what was issued whatever apply checked.
// With an actor in ctx (an admin request), the audit row, with the row before and after, is
// written in the same transaction; a refused change writes none.
func (r *Repository) UpdateCoupon(ctx context.Context, code string, apply func(*domain.Coupon) error) (domain.Coupon, error) {
	var out domain.Coupon
	var applyErr error
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		c, err := scanCoupon(tx.QueryRow(ctx, `SELECT `+couponColumns+` FROM coupon WHERE code = $1 FOR UPDATE`, code))
		if err != nil {
			return err
		}
		if applyErr = apply(&c); applyErr != nil {
			return applyErr
		}
		var before []byte
		if _, audited := domain.ActorOf(ctx); audited {
			if err := tx.QueryRow(ctx, `SELECT to_jsonb(c) FROM coupon c WHERE c.id = $1`, c.ID).Scan(&before); err != nil {
				return err
			}
		}
		out, err = scanCoupon(tx.QueryRow(ctx, `UPDATE coupon
			SET opens_at = $2, closes_at = $3, paused = $4, total_quantity = $5
			WHERE id = $1 RETURNING `+couponColumns, c.ID, c.OpensAt, c.ClosesAt, c.Paused, c.TotalQuantity))
		if err != nil {
			return err
		}
		return audit(ctx, tx, domain.ActionUpdateCoupon, code, before, "coupon", c.ID)
	})
	switch {
	case applyErr != nil:
		return domain.Coupon{}, applyErr
	case errors.Is(err, pgx.ErrNoRows):
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	case err != nil:
		return domain.Coupon{}, translate("update coupon "+code, err)
	}
	return out, nil
}

const scheduleColumns = `id, code_prefix, name, open_minute, time_zone, quantity_per_day, discount_amount,
	valid_days, min_order_amount, created_at`

func scanSchedule(row pgx.Row) (domain.Schedule, error) {
	var s domain.Schedule
	err := row.Scan(&s.ID, &s.CodePrefix, &s.Name, &s.OpenMinute, &s.TimeZone, &s.QuantityPerDay,
		&s.DiscountAmount, &s.ValidDays, &s.MinOrderAmount, &s.CreatedAt)
	return s, err
}

// CreateSchedule stores a schedule (created at s.CreatedAt) and returns it as stored; a taken
// prefix is domain.ErrCouponExists. With an actor in ctx (an admin request), the audit row is
// written in the same transaction.
func (r *Repository) CreateSchedule(ctx context.Context, s domain.Schedule) (domain.Schedule, error) {
	if s.ID == uuid.Nil {
		s.ID = uuid.Must(uuid.NewV7())
	}
	var out domain.Schedule
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var err error
		out, err = scanSchedule(tx.QueryRow(ctx, `INSERT INTO coupon_schedule (id, code_prefix, name, open_minute,
				time_zone, quantity_per_day, discount_amount, valid_days, min_order_amount, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING `+scheduleColumns,
			s.ID, s.CodePrefix, s.Name, s.OpenMinute, s.TimeZone, s.QuantityPerDay, s.DiscountAmount, s.ValidDays, s.MinOrderAmount,
			s.CreatedAt))
		if err != nil {
			return err
		}
		return audit(ctx, tx, domain.ActionCreateSchedule, s.CodePrefix, nil, "coupon_schedule", s.ID)
	})
	if isUniqueViolation(err) {
		return domain.Schedule{}, fmt.Errorf("create schedule %s: %w", s.CodePrefix, domain.ErrCouponExists)
	}
	if err != nil {
		return domain.Schedule{}, translate("create schedule "+s.CodePrefix, err)
	}
	return out, nil
}

// ListSchedules returns every schedule, ordered by prefix.
func (r *Repository) ListSchedules(ctx context.Context) ([]domain.Schedule, error) {
	return collect(ctx, r, "list schedules", `SELECT `+scheduleColumns+` FROM coupon_schedule ORDER BY code_prefix`,
		func(row pgx.CollectableRow) (domain.Schedule, error) { return scanSchedule(row) })
}

// MaterialiseCoupon creates schedule's coupon c for local day (its date), unless one exists for
// that day (or its code is taken): whatever the number of pods calling it at once, one row is
// created per schedule and day, by the UNIQUE constraints. It reports whether this call did.
func (r *Repository) MaterialiseCoupon(ctx context.Context, c domain.Coupon, scheduleID uuid.UUID, day time.Time) (bool, error) {
	tag, err := r.pool.Exec(ctx, `INSERT INTO coupon (id, code, name, discount_amount, total_quantity,
			opens_at, closes_at, valid_days, min_order_amount, schedule_id, schedule_day)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT DO NOTHING`,
		uuid.Must(uuid.NewV7()), c.Code, c.Name, c.DiscountAmount, c.TotalQuantity,
		c.OpensAt, c.ClosesAt, c.ValidDays, c.MinOrderAmount, scheduleID, pgDate(day))
	if err != nil {
		return false, translate("materialise "+c.Code, err)
	}
	return tag.RowsAffected() == 1, nil
}

// pgDate is day's calendar date as a PostgreSQL date, whatever its location.
func pgDate(day time.Time) string { return day.Format(time.DateOnly) }

// audit writes the audit row of an admin change made in tx when ctx carries its actor
// (domain.WithActor), in the change's transaction: both commit or neither. before is the row
// before the change (nil: a creation); after is read back from table's row id, as stored.
func audit(ctx context.Context, tx pgx.Tx, action, target string, before []byte, table string, id uuid.UUID) error {
	a, ok := domain.ActorOf(ctx)
	if !ok {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO admin_audit (id, actor, source, request_id, action, target, before, after)
		VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, (SELECT to_jsonb(t) FROM `+pgx.Identifier{table}.Sanitize()+` t WHERE t.id = $8))`,
		uuid.Must(uuid.NewV7()), a.Name, a.Source, a.RequestID, action, target, before, id)
	return err
}

// ListAudit returns the newest limit audit entries, newest first.
func (r *Repository) ListAudit(ctx context.Context, limit int) ([]domain.AuditEntry, error) {
	return collect(ctx, r, "list audit", `SELECT id, at, actor, source, request_id, action, target, before, after
		FROM admin_audit ORDER BY at DESC, id DESC LIMIT $1`,
		func(row pgx.CollectableRow) (domain.AuditEntry, error) {
			var e domain.AuditEntry
			err := row.Scan(&e.ID, &e.At, &e.Actor.Name, &e.Actor.Source, &e.Actor.RequestID, &e.Action, &e.Target, &e.Before, &e.After)
			return e, err
		}, limit)
}
