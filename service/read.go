package service

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"time"

	"couponsvc/engine"

	"github.com/google/uuid"
)

// Coupon reads (GET /api/v1/coupons…) are served from one snapshot of every coupon, so that
// clients polling "remaining" during an event cost PostgreSQL at most one query at a time per
// instance, never a query each: a read is answered from the snapshot unless it is older than
// MetaRefresh or this instance has issued, heard of an issue or changed a coupon since it was
// read; then one query reads it again, shared by every read that waits meanwhile. So a client
// reads its own issue at once on the instance that served it, and anyone's within MetaRefresh.

// readSnapshot is every coupon as one query read it.
type readSnapshot struct {
	at     time.Time // when the query began
	seen   uint64    // the engine's Changes before it began
	list   []domain.Coupon
	byCode map[string]int // index in list
}

// snapshot returns a snapshot of every coupon that reflects every change this instance knew of
// when called, at most MetaRefresh old.
func (s *Service) snapshot(ctx context.Context) (*readSnapshot, error) {
	seen := s.engine.Changes()
	for {
		if sn := s.reads.Load(); sn != nil && sn.seen >= seen && time.Since(sn.at) < s.cfg.Engine.MetaRefresh {
			return sn, nil
		}
		// One query at a time, whatever the number of readers; it runs to its end (bounded)
		// even when the reader that started it goes away, as the others wait for it.
		v, err, _ := s.readFlight.Do("", func() (any, error) {
			qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
			defer cancel()
			release, err := s.readSlot(qctx)
			if err != nil {
				return nil, err
			}
			defer release()
			sn := &readSnapshot{at: time.Now(), seen: s.engine.Changes()}
			cs, err := s.repo.ListCoupons(qctx)
			if err != nil {
				return nil, engine.Translate(err)
			}
			sn.list, sn.byCode = cs, make(map[string]int, len(cs))
			for i, c := range cs {
				sn.byCode[c.Code] = i
			}
			s.reads.Store(sn)
			return sn, nil
		})
		if err != nil {
			return nil, err
		}
		// A query that began before this read's changes does not do; the next one will.
		if sn := v.(*readSnapshot); sn.seen >= seen {
			return sn, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read coupons: %w", err)
		}
	}
}

// GetCoupon returns one coupon with its counts (see the snapshot above). A code the snapshot
// lacks is looked up as the issue path looks up unknown codes (engine.Lookup: within a small
// budget of queries), so that a coupon created a moment ago on another instance is found.
func (s *Service) GetCoupon(ctx context.Context, code string) (domain.Coupon, error) {
	if !domain.ValidCode(code) {
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	sn, err := s.snapshot(ctx)
	if err != nil {
		return domain.Coupon{}, err
	}
	if i, ok := sn.byCode[code]; ok {
		return sn.list[i], nil
	}
	if err := s.engine.Lookup(ctx, code); err != nil {
		return domain.Coupon{}, err
	}
	// It exists, and the snapshot predates it: read them again.
	s.reads.Store(nil)
	if sn, err = s.snapshot(ctx); err != nil {
		return domain.Coupon{}, err
	}
	if i, ok := sn.byCode[code]; ok {
		return sn.list[i], nil
	}
	return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
}

// ListCoupons returns every coupon with its counts (see the snapshot above).
func (s *Service) ListCoupons(ctx context.Context) ([]domain.Coupon, error) {
	sn, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return sn.list, nil
}

// readTimeout bounds the snapshot's query.
const readTimeout = 5 * time.Second

// UserWallet returns the user's wallet entries with the given status (WalletAll: every one).
func (s *Service) UserWallet(ctx context.Context, userID uuid.UUID, status WalletStatus) ([]domain.WalletEntry, error) {
	release, err := s.readSlot(ctx)
	if err != nil {
		return nil, err
	}
	w, err := s.repo.UserWallet(ctx, userID)
	release()
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

// readSlot waits for one of the ReadConns slots of the user reads and returns its release.
func (s *Service) readSlot(ctx context.Context) (release func(), err error) {
	select {
	case s.readSlots <- struct{}{}:
		return func() { <-s.readSlots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a read connection: %w", ctx.Err())
	}
}
