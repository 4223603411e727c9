package engine

import (
	"couponsvc/domain"

	"testing"
	"time"
)

// A copy of a coupon read before a change this instance made is not applied over it: a refresh
// that read the coupon just before an admin reopened it does not close it again.
func TestStaleCopyDoesNotUndoAChange(t *testing.T) {
	now := time.Now()
	closed := domain.Coupon{Code: "W", TotalQuantity: 5, OpensAt: now.Add(-time.Hour), ClosesAt: &now}
	reopened := closed
	reopened.ClosesAt = nil
	st := newCouponState(closed)
	seen := st.changes.Load() // a refresh begins reading: it will read the closed copy
	st.apply(reopened, st.changes.Add(1))
	st.apply(closed, seen) // the refresh's copy arrives late
	if err := st.window.Load().check(now.Add(time.Minute)); err != nil {
		t.Fatalf("the late, older copy closed the coupon again: %v", err)
	}
}
