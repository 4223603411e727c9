package service

import (
	"couponsvc/domain"
	"couponsvc/internal/testenv"

	"context"
	"errors"
	"testing"
	"time"

	"couponsvc/engine"

	"github.com/google/uuid"
)

// A change made through one instance reaches another through the bus within moments, long
// before its periodic refresh (an hour here): the window, a raised stock (the sold-out and
// final caches are dropped), a pause.
func TestChangesReachOtherInstances(t *testing.T) {
	st := newStack(t)
	now := time.Now()
	c := testenv.NewClock(now)
	cfg := Config{Engine: engine.Config{MetaRefresh: time.Hour}}
	a, b := st.service(t, c, true, cfg), st.service(t, c, true, cfg)
	later := now.Add(time.Hour)
	mustCreate(t, a, domain.Coupon{Code: "SHARED", Name: "shared", DiscountAmount: 1, TotalQuantity: 1, OpensAt: later, ValidDays: 30})
	ctx := context.Background()
	u1, u2 := uuid.New(), uuid.New()
	if _, err := b.Issue(ctx, "SHARED", u1); !errors.Is(err, domain.ErrEventNotOpen) {
		t.Fatalf("before opening: %v", err)
	}
	update := func(p CouponPatch) {
		t.Helper()
		if _, err := a.UpdateCoupon(ctx, "SHARED", p); err != nil {
			t.Fatal(err)
		}
	}
	// eventually retries issue on b until it gives want, within 2 s.
	eventually := func(what string, user uuid.UUID, want error) {
		t.Helper()
		start := time.Now()
		for {
			_, err := b.Issue(ctx, "SHARED", user)
			if errors.Is(err, want) || (want == nil && err == nil) {
				t.Logf("%s: seen by the other instance after %v", what, time.Since(start))
				return
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("%s: the other instance still answers %v", what, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	earlier := now.Add(-time.Minute)
	update(CouponPatch{OpensAt: &earlier})
	eventually("window opened", u1, nil)
	for range 2 { // the second answer comes from b's final cache
		if _, err := b.Issue(ctx, "SHARED", u2); !errors.Is(err, domain.ErrSoldOut) {
			t.Fatalf("stock 1 issued: %v", err)
		}
	}
	two := 2
	update(CouponPatch{TotalQuantity: &two})
	eventually("stock raised", u2, nil)
	if _, err := b.Issue(ctx, "SHARED", uuid.New()); !errors.Is(err, domain.ErrSoldOut) {
		t.Fatalf("stock 2 issued: %v", err)
	}
	paused := true
	update(CouponPatch{Paused: &paused})
	eventually("paused", uuid.New(), domain.ErrEventClosed)
	one := 1
	if _, err := a.UpdateCoupon(ctx, "SHARED", CouponPatch{TotalQuantity: &one}); !errors.Is(err, domain.ErrStockBelowIssued) {
		t.Fatalf("stock below issued: %v", err)
	}
}

// Without any notice (no bus), an instance's copy is at most MetaRefresh old.
func TestStalenessBoundedWithoutBus(t *testing.T) {
	st := newStack(t)
	c := testenv.NewClock(time.Now())
	cfg := Config{Engine: engine.Config{MetaRefresh: 100 * time.Millisecond}}
	a, b := st.service(t, c, false, cfg), st.service(t, c, false, cfg)
	mustCreate(t, a, domain.Coupon{Code: "LONELY", Name: "lonely", DiscountAmount: 1, TotalQuantity: 10, ValidDays: 30})
	ctx := context.Background()
	if _, err := b.Issue(ctx, "LONELY", uuid.New()); err != nil {
		t.Fatal(err)
	}
	paused := true
	if _, err := a.UpdateCoupon(ctx, "LONELY", CouponPatch{Paused: &paused}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		_, err := b.Issue(ctx, "LONELY", uuid.New())
		if errors.Is(err, domain.ErrEventClosed) {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("still %v after 1 s with a 100 ms refresh", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("pause seen without a notice after %v", time.Since(start))
}
