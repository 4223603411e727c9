package engine

import (
	"couponsvc/domain"

	"log/slog"
	"testing"
	"time"

	"couponsvc/internal/metrics"
	"couponsvc/internal/testenv"
)

func TestFrontier(t *testing.T) {
	var f frontier
	t0 := time.Now().Truncate(time.Millisecond)
	if !f.past(t0, t0.Add(5*time.Millisecond)) {
		t.Fatal("nothing handled: the handling is past any moment")
	}
	// In millisecond t0+10ms, requests that arrived at t0+2ms and t0+7ms were handled.
	f.observe(t0.Add(10*time.Millisecond+100*time.Microsecond), t0.Add(7*time.Millisecond))
	f.observe(t0.Add(10*time.Millisecond+900*time.Microsecond), t0.Add(2*time.Millisecond))
	at := t0.Add(11*time.Millisecond + 500*time.Microsecond) // the last whole ms is t0+10ms
	if f.past(t0.Add(5*time.Millisecond), at) {
		t.Fatal("a request from t0+2ms was handled: not past t0+5ms")
	}
	if !f.past(t0.Add(time.Millisecond), at) {
		t.Fatal("the earliest handled arrived at t0+2ms: past t0+1ms")
	}
	// A later millisecond with only recent arrivals is past; the slot is reused 64 ms on.
	f.observe(t0.Add(11*time.Millisecond), t0.Add(10*time.Millisecond))
	if !f.past(t0.Add(5*time.Millisecond), t0.Add(12*time.Millisecond)) {
		t.Fatal("only t0+10ms arrivals handled in t0+11ms: past t0+5ms")
	}
	f.observe(t0.Add(74*time.Millisecond), t0.Add(73*time.Millisecond)) // same slot as t0+10ms
	if !f.past(t0.Add(5*time.Millisecond), t0.Add(75*time.Millisecond)) {
		t.Fatal("a reused slot kept an old millisecond's arrival")
	}
}

func TestLagWindow(t *testing.T) {
	var w lagWindow
	t0 := time.Now()
	if got := w.recent(t0); got != 0 {
		t.Fatalf("nothing observed: %v", got)
	}
	// 1,999 short lags and one long one: the 99.9th percentile is a short one, within its
	// bucket.
	for i := range 1999 {
		w.observe(t0.Add(time.Duration(i)*time.Nanosecond), 3*time.Millisecond)
	}
	w.observe(t0.Add(time.Millisecond), 40*time.Millisecond)
	if got := w.recent(t0.Add(2 * time.Millisecond)); got < 3*time.Millisecond || got > 3*time.Millisecond*1415/1000 {
		t.Fatalf("p99.9 of 1,999×3ms and 1×40ms = %v, want 3ms rounded up by at most √2", got)
	}
	// Many long ones: the percentile follows.
	for range 100 {
		w.observe(t0.Add(3*time.Millisecond), 20*time.Millisecond)
	}
	if got := w.recent(t0.Add(4 * time.Millisecond)); got < 20*time.Millisecond || got > 57*time.Millisecond {
		t.Fatalf("p99.9 with 100×20ms = %v", got)
	}
	// The next window still remembers the previous one...
	t1 := t0.Add(lagSpan + 10*time.Millisecond)
	w.observe(t1, time.Millisecond)
	if got := w.recent(t1); got < 20*time.Millisecond {
		t.Fatalf("one window later: %v, want ≥ 20ms", got)
	}
	// ...the one after forgets it...
	t2 := t1.Add(lagSpan + 10*time.Millisecond)
	w.observe(t2, 2*time.Millisecond)
	if got := w.recent(t2); got < 2*time.Millisecond || got > 3*time.Millisecond {
		t.Fatalf("two windows later: %v, want ~2ms", got)
	}
	// ...and an idle process has no lag.
	if got := w.recent(t2.Add(3 * lagSpan)); got != 0 {
		t.Fatalf("idle: %v, want 0", got)
	}
	for _, d := range []time.Duration{0, lagFirst, 3 * time.Millisecond, time.Second, time.Hour} {
		if b := lagBucket(d); lagBound(b) < d && b != lagBuckets-1 {
			t.Fatalf("%v in bucket %d whose bound is %v", d, b, lagBound(b))
		}
	}
}

// settle lets go of st.mu while it waits, and meanwhile the stock it waits on may change:
// another instance's sold-out notice sets remaining to 0 (confirmSoldOut), a refresh after a
// stock raise sets it beyond the queue (apply). Settle must then stop, not index the queue
// with the old boundary.
func TestSettleWhenTheStockChangesMeanwhile(t *testing.T) {
	for _, changed := range []int{0, 100} {
		s := New(nil, nil, Config{BoundarySettle: 50 * time.Millisecond}, metrics.New(), slog.New(slog.DiscardHandler))
		st := newCouponState(domain.Coupon{Code: "SETTLE", TotalQuantity: 3})
		for range 3 {
			st.queue = append(st.queue, &issueRequest{arrived: time.Now()})
		}
		done := make(chan any, 1)
		go func() {
			defer func() { done <- recover() }()
			st.mu.Lock()
			defer st.mu.Unlock()
			s.settle(st) // the boundary arrived just now: it waits about 50 ms
		}()
		time.Sleep(10 * time.Millisecond)
		st.mu.Lock()
		st.remaining = changed
		st.mu.Unlock()
		if p := testenv.Receive(t, done, 5*time.Second, "settle returns"); p != nil {
			t.Errorf("remaining set to %d while settle waited: panic %v", changed, p)
		}
	}
}
