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
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkIssueAnsweredFromMemory measures the path most of a crowd takes once a coupon is
// sold out: the answer (410, or 409 for a holder) comes from the final holder set, with no lock
// and no query. The repository and locker are never reached on this path.
func BenchmarkIssueAnsweredFromMemory(b *testing.B) {
	benchmarkAnsweredFromMemory(b, nil)
}

// BenchmarkIssueAnsweredFromMemoryTraced is the same path with traces on: each request in a
// recorded server span (as the handler starts it), which Issue gives its outcome; the spans go
// to no exporter. Against the benchmark above, it is what traces on cost a sold-out crowd.
func BenchmarkIssueAnsweredFromMemoryTraced(b *testing.B) {
	tp := sdktrace.NewTracerProvider()
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	benchmarkAnsweredFromMemory(b, tp.Tracer("bench"))
}

func benchmarkAnsweredFromMemory(b *testing.B, tracer trace.Tracer) {
	s := New(nil, nil, Config{LockWait: time.Second, Tracer: tracer}, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
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
			rctx := ctx
			var span trace.Span
			if tracer != nil {
				rctx, span = tracer.Start(ctx, "POST /api/v1/coupons/:code/issue", trace.WithSpanKind(trace.SpanKindServer))
			}
			if _, err := s.Issue(rctx, "A0001", users[i%len(users)]); err == nil {
				b.Fatal("issued from a sold-out coupon")
			}
			if span != nil {
				span.End()
			}
			i++
		}
	})
}
