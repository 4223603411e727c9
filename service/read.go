package service

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"time"

	"couponsvc/engine"

	"github.com/google/uuid"
)

// The reads: coupons with their counts, and a user's wallet. They go to PostgreSQL, never to
// the engine's cache: what a client reads is what was committed.

// GetCoupon returns the coupon with its current counts.
func (s *Service) GetCoupon(ctx context.Context, code string) (domain.Coupon, error) {
	if !domain.ValidCode(code) {
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	c, err := s.repo.CouponByCode(ctx, code)
	if err != nil {
		return domain.Coupon{}, engine.Translate(err)
	}
	return c, nil
}

// ListCoupons returns every coupon with its current counts.
func (s *Service) ListCoupons(ctx context.Context) ([]domain.Coupon, error) {
	cs, err := s.repo.ListCoupons(ctx)
	if err != nil {
		return nil, engine.Translate(err)
	}
	return cs, nil
}

// UserWallet returns the user's wallet entries with the given status (WalletAll: every one).
func (s *Service) UserWallet(ctx context.Context, userID uuid.UUID, status WalletStatus) ([]domain.WalletEntry, error) {
	w, err := s.repo.UserWallet(ctx, userID)
	if err != nil {
		return nil, engine.Translate(err)
	}
	if status == WalletAll {
		return w, nil
	}
	now := s.now()
	out := w[:0]
	for _, e := range w {
		if statusOf(e, now) == status {
			out = append(out, e)
		}
	}
	return out, nil
}

// WalletStatus filters a user's wallet.
type WalletStatus string

// Wallet filters: usable entries are neither redeemed nor expired; a redeemed entry counts as
// redeemed whether or not it has expired since.
const (
	WalletAll      WalletStatus = ""
	WalletUsable   WalletStatus = "usable"
	WalletRedeemed WalletStatus = "redeemed"
	WalletExpired  WalletStatus = "expired"
)

// ParseWalletStatus parses the ?status= filter of a wallet listing.
func ParseWalletStatus(s string) (WalletStatus, error) {
	switch st := WalletStatus(s); st {
	case WalletAll, WalletUsable, WalletRedeemed, WalletExpired:
		return st, nil
	}
	return "", invalid("status must be usable, redeemed or expired")
}

// statusOf is the entry's status at now.
func statusOf(e domain.WalletEntry, now time.Time) WalletStatus {
	switch {
	case e.RedeemedAt != nil:
		return WalletRedeemed
	case !now.Before(e.ExpiresAt):
		return WalletExpired
	}
	return WalletUsable
}
