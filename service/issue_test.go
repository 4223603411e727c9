package service

import (
	"couponsvc/domain"
	"couponsvc/internal/testenv"

	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The window is [opensAt, closesAt), to the millisecond, on the service's clock.
func TestIssueWindowEdges(t *testing.T) {
	st := newStack(t)
	opens := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	closes := opens.Add(time.Hour)
	c := testenv.NewClock(opens.Add(-time.Hour))
	s := st.service(t, c, false, Config{})
	mustCreate(t, s, domain.Coupon{Code: "EDGE", Name: "edge", DiscountAmount: 100, TotalQuantity: 100,
		OpensAt: opens, ClosesAt: &closes, ValidDays: 7})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"1 ms before opensAt", opens.Add(-time.Millisecond), domain.ErrEventNotOpen},
		{"at opensAt", opens, nil},
		{"1 ms after opensAt", opens.Add(time.Millisecond), nil},
		{"1 ms before closesAt", closes.Add(-time.Millisecond), nil},
		{"at closesAt", closes, domain.ErrEventClosed},
		{"1 ms after closesAt", closes.Add(time.Millisecond), domain.ErrEventClosed},
	} {
		c.Set(tc.at)
		e, err := s.Issue(ctx, "EDGE", uuid.New())
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if err == nil && !e.ExpiresAt.Equal(e.IssuedAt.Add(7*24*time.Hour)) {
			t.Errorf("%s: expiresAt %v for issuedAt %v and 7 valid days", tc.name, e.ExpiresAt, e.IssuedAt)
		}
	}
	// The window is checked at the request's arrival, not when it is handled: a request that
	// reached the host 2 ms before the opening and is handled 1 ms after it is not issued.
	c.Set(opens.Add(time.Millisecond))
	early := WithArrival(ctx, time.Now().Add(-2*time.Millisecond))
	if _, err := s.Issue(early, "EDGE", uuid.New()); !errors.Is(err, domain.ErrEventNotOpen) {
		t.Errorf("arrived 1 ms before opensAt, handled 1 ms after: %v, want %v", err, domain.ErrEventNotOpen)
	}

	c.Set(opens.Add(time.Minute))
	pause := func(p bool) {
		t.Helper()
		if _, err := s.UpdateCoupon(ctx, "EDGE", CouponPatch{Paused: &p}); err != nil {
			t.Fatal(err)
		}
	}
	pause(true)
	if _, err := s.Issue(ctx, "EDGE", uuid.New()); !errors.Is(err, domain.ErrEventClosed) {
		t.Errorf("paused: %v", err)
	}
	pause(false)
	user := uuid.New()
	e, err := s.Issue(ctx, "EDGE", user)
	if err != nil {
		t.Fatalf("resumed: %v", err)
	}
	// The 201's expiry is the one PostgreSQL stored.
	w, err := s.UserWallet(ctx, user, WalletAll)
	if err != nil || len(w) != 1 || !w[0].ExpiresAt.Equal(e.ExpiresAt) {
		t.Fatalf("stored wallet %+v (%v), issued %+v", w, err, e)
	}
}
