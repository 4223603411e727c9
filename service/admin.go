package service

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"couponsvc/engine"
)

// DefaultValidDays is how long a wallet entry stays valid when a coupon does not say.
const DefaultValidDays = 30

// Limits of admin input: beyond them a value is a typo, and PostgreSQL's int columns end at 2^31.
const (
	maxQuantity   = 100_000_000
	maxAmount     = 1_000_000_000_000_000 // 10^18, within int64
	maxValidDays  = 3650
	maxNameLength = 200
)

// CreateCoupon creates a coupon. A zero OpensAt opens it now.
func (s *Service) CreateCoupon(ctx context.Context, c domain.Coupon) (domain.Coupon, error) {
	if c.OpensAt.IsZero() {
		c.OpensAt = s.now()
	}
	if err := validateCoupon(c); err != nil {
		return domain.Coupon{}, err
	}
	out, err := s.repo.CreateCoupon(ctx, domain.Coupon{Code: c.Code, Name: c.Name, DiscountAmount: c.DiscountAmount,
		TotalQuantity: c.TotalQuantity, OpensAt: c.OpensAt, ClosesAt: c.ClosesAt, ValidDays: c.ValidDays,
		MinOrderAmount: c.MinOrderAmount})
	if err != nil {
		return domain.Coupon{}, engine.Translate(err)
	}
	s.log.Info("coupon created", "coupon", out.Code, "total", out.TotalQuantity, "opens_at", out.OpensAt)
	return out, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{domain.ErrInvalid}, args...)...)
}

func validateCoupon(c domain.Coupon) error {
	switch {
	case !domain.ValidCode(c.Code):
		return invalid("code must be 1 to 64 letters, digits, '-' or '_'")
	case c.Name == "" || utf8.RuneCountInString(c.Name) > maxNameLength || !utf8.ValidString(c.Name):
		return invalid("name must be 1 to %d characters", maxNameLength)
	case c.DiscountAmount < 0 || c.DiscountAmount > maxAmount:
		return invalid("discountAmount must be between 0 and %d", int64(maxAmount))
	case c.TotalQuantity < 0 || c.TotalQuantity > maxQuantity:
		return invalid("totalQuantity must be between 0 and %d", maxQuantity)
	case c.ValidDays < 1 || c.ValidDays > maxValidDays:
		return invalid("validDays must be between 1 and %d", maxValidDays)
	case c.MinOrderAmount < 0 || c.MinOrderAmount > maxAmount:
		return invalid("minOrderAmount must be between 0 and %d", int64(maxAmount))
	}
	return validateWindow(c.OpensAt, c.ClosesAt)
}

func validateWindow(opensAt time.Time, closesAt *time.Time) error {
	if closesAt != nil && !closesAt.After(opensAt) {
		return invalid("closesAt must be after opensAt")
	}
	return nil
}

// CouponPatch lists the changes to a coupon; nil fields stay as they are.
type CouponPatch struct {
	Paused        *bool
	OpensAt       *time.Time
	SetClosesAt   bool       // change the end of the window to ClosesAt
	ClosesAt      *time.Time // nil (with SetClosesAt): no end
	TotalQuantity *int
}

// UpdateCoupon pauses or resumes a coupon, moves its window or changes its stock, never below
// what was issued (domain.ErrStockBelowIssued). The change locks the coupon's row in PostgreSQL, as
// every issue batch does, so it falls between two batches and never races with issuance; it
// does not take the coupon's distributed lock, which the coupon's owner keeps for as long as a
// crowd lasts. Every instance sees the change within moments (the bus), and within MetaRefresh
// at the latest; a batch's sold-out finding from before a stock change is void (generations).
func (s *Service) UpdateCoupon(ctx context.Context, code string, p CouponPatch) (domain.Coupon, error) {
	if !domain.ValidCode(code) {
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	if p.TotalQuantity != nil && (*p.TotalQuantity < 0 || *p.TotalQuantity > maxQuantity) {
		return domain.Coupon{}, invalid("totalQuantity must be between 0 and %d", maxQuantity)
	}
	c, err := s.repo.UpdateCoupon(ctx, code, func(c *domain.Coupon) error {
		if p.Paused != nil {
			c.Paused = *p.Paused
		}
		if p.OpensAt != nil {
			c.OpensAt = *p.OpensAt
		}
		if p.SetClosesAt {
			c.ClosesAt = p.ClosesAt
		}
		if p.TotalQuantity != nil {
			if *p.TotalQuantity < c.IssuedQuantity {
				return fmt.Errorf("%w: %d issued, asked for %d", domain.ErrStockBelowIssued, c.IssuedQuantity, *p.TotalQuantity)
			}
			c.TotalQuantity = *p.TotalQuantity
		}
		return validateWindow(c.OpensAt, c.ClosesAt)
	})
	if err != nil {
		return domain.Coupon{}, engine.Translate(err)
	}
	s.engine.Changed(ctx, c)
	s.log.Info("coupon updated", "coupon", c.Code, "paused", c.Paused, "opens_at", c.OpensAt,
		"closes_at", c.ClosesAt, "total", c.TotalQuantity, "issued", c.IssuedQuantity)
	return c, nil
}

// Bounds of an audit listing: the default and the largest number of entries returned at once.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// ListAudit returns the newest limit (1 to MaxAuditLimit) admin changes, newest first.
func (s *Service) ListAudit(ctx context.Context, limit int) ([]domain.AuditEntry, error) {
	if limit < 1 || limit > MaxAuditLimit {
		return nil, invalid("limit must be between 1 and %d", MaxAuditLimit)
	}
	out, err := s.repo.ListAudit(ctx, limit)
	if err != nil {
		return nil, engine.Translate(err)
	}
	return out, nil
}
