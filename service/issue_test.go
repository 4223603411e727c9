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

// The window is [opensAt, closesAt), to the millisecond, on the service's clock. (PostgreSQL
// checks it again by its own clock, which is inside the window throughout.)
func TestIssueWindowEdges(t *testing.T) {
	st := newStack(t)
	opens := time.Now().Add(-30 * time.Minute).Truncate(time.Millisecond)
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

// The issuing window is PostgreSQL's: an instance whose clock is an hour off (behind: it
// believes a closed coupon open; ahead: it believes a coupon open an hour early) issues
// nothing outside the window, answers what PostgreSQL's clock says, and keeps serving.
func TestWindowByPostgresClock(t *testing.T) {
	st := newStack(t)
	repo := st.repo(t)
	ctx := context.Background()
	now := time.Now()
	late, err := repo.CreateCoupon(ctx, domain.Coupon{Code: "LATE", Name: "late", DiscountAmount: 1, TotalQuantity: 10,
		OpensAt: now.Add(-2 * time.Hour), ClosesAt: ptr(now.Add(-time.Minute)), ValidDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	soon, err := repo.CreateCoupon(ctx, domain.Coupon{Code: "SOON", Name: "soon", DiscountAmount: 1, TotalQuantity: 10,
		OpensAt: now.Add(30 * time.Minute), ValidDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	behind := st.service(t, testenv.NewClock(now.Add(-time.Hour)), false, Config{})
	ahead := st.service(t, testenv.NewClock(now.Add(time.Hour)), false, Config{})
	for range 3 {
		if _, err := behind.Issue(ctx, "LATE", uuid.New()); !errors.Is(err, domain.ErrEventClosed) {
			t.Fatalf("closed by PostgreSQL's clock, the instance an hour behind: %v", err)
		}
		if _, err := ahead.Issue(ctx, "SOON", uuid.New()); !errors.Is(err, domain.ErrEventNotOpen) {
			t.Fatalf("not open by PostgreSQL's clock, the instance an hour ahead: %v", err)
		}
	}
	for _, c := range []domain.Coupon{late, soon} {
		got, err := repo.CouponByCode(ctx, c.Code)
		if err != nil || got.IssuedQuantity != 0 {
			t.Errorf("%s: %+v %v, want nothing issued", c.Code, got, err)
		}
	}
	// The instance still serves an open coupon.
	mustCreate(t, behind, domain.Coupon{Code: "OPEN", Name: "open", DiscountAmount: 1, TotalQuantity: 10, ValidDays: 1, OpensAt: now.Add(-2 * time.Hour)})
	if _, err := behind.Issue(ctx, "OPEN", uuid.New()); err != nil {
		t.Fatalf("an open coupon after the refusals: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
