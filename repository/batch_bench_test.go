package repository

import (
	"couponsvc/domain"

	"context"
	"testing"

	"couponsvc/internal/testenv"

	"github.com/google/uuid"
)

// BenchmarkIssueBatch measures the group-commit statement alone: 300 fresh users in one
// transaction, on a throwaway PostgreSQL (fsync off, so this is the statement's own cost).
func BenchmarkIssueBatch(b *testing.B) {
	r := newRepo(b, testenv.Database(b))
	ctx := context.Background()
	if err := r.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	c, err := r.CreateCoupon(ctx, domain.Coupon{Code: "BENCH", Name: "b", DiscountAmount: 1, TotalQuantity: 100_000_000})
	if err != nil {
		b.Fatal(err)
	}
	users := make([]uuid.UUID, 300)
	b.ReportAllocs()
	for b.Loop() {
		for i := range users {
			users[i] = uuid.New()
		}
		if _, err := r.IssueBatch(ctx, c.ID, 1, users); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/300, "µs/issue")
}
