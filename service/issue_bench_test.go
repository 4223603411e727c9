package service

import (
	"couponsvc/domain"

	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"couponsvc/internal/metrics"

	"github.com/google/uuid"
)

// BenchmarkIssueAnsweredFromMemory measures the path most of a crowd takes once a coupon is
// sold out: the answer (410, or 409 for a holder) comes from the final holder set, with no lock
// and no query. The repository and locker are never reached on this path.
func BenchmarkIssueAnsweredFromMemory(b *testing.B) {
	s := New(nil, nil, Config{LockWait: time.Second}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	st := newCouponState(domain.Coupon{ID: uuid.New(), Code: "A0001", TotalQuantity: 300, IssuedQuantity: 300})
	holder := uuid.New()
	st.holders[holder] = struct{}{}
	st.soldOut, st.final = true, true
	s.coupons["A0001"] = st
	users := make([]uuid.UUID, 1024)
	for i := range users {
		users[i] = uuid.New()
	}
	users[0] = holder
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Issue(ctx, "A0001", users[i%len(users)]); err == nil {
				b.Fatal("issued from a sold-out coupon")
			}
			i++
		}
	})
}
