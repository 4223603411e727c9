package engine

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"couponsvc/domain"
	"couponsvc/internal/testenv"
)

// remainingOf gathers s's registry as a scrape does and returns couponsvc_coupon_remaining by
// coupon.
func remainingOf(t *testing.T, s *Engine) map[string]float64 {
	t.Helper()
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "couponsvc_coupon_remaining" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// The remaining stock a dashboard shows: lowered by this instance's issues, kept for an hour
// after the coupon closes, then dropped so that past daily coupons do not pile up as series.
func TestRemainingStockMetric(t *testing.T) {
	st := newStack(t)
	opens := time.Now().Add(-30 * time.Minute).Truncate(time.Millisecond) // PostgreSQL's clock inside the window
	closes := opens.Add(time.Hour)
	c := testenv.NewClock(opens)
	s := st.engine(t, c, false, Config{})
	st.create(t, domain.Coupon{Code: "STOCK", Name: "stock", DiscountAmount: 100, TotalQuantity: 5,
		OpensAt: opens, ClosesAt: &closes, ValidDays: 7})
	for range 2 {
		if _, err := s.Issue(context.Background(), "STOCK", uuid.New(), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := remainingOf(t, s); got["STOCK"] != 3 {
		t.Fatalf("remaining %v, want STOCK 3", got)
	}
	c.Set(closes.Add(stockShownAfterClose - time.Minute))
	if got, ok := remainingOf(t, s)["STOCK"]; !ok || got != 3 {
		t.Errorf("%v after closing: remaining %v (shown %v), want 3", stockShownAfterClose-time.Minute, got, ok)
	}
	c.Set(closes.Add(stockShownAfterClose + time.Minute))
	if got, ok := remainingOf(t, s)["STOCK"]; ok {
		t.Errorf("%v after closing: remaining still shown (%v)", stockShownAfterClose+time.Minute, got)
	}
}
