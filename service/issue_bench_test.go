package service

import (
	"couponsvc/domain"

	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"couponsvc/engine"
	"couponsvc/internal/metrics"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkIssueAnsweredFromMemory measures the path most of a crowd takes once a coupon is
// sold out: the answer (410, or 409 for a holder) comes from the final holder set, with no lock
// and no query. The instance learns the sell-out as from another instance's notice (the facts
// bus), before the timer starts; the locker is never reached, and the repository not on the
// path measured.
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
	holder := uuid.New()
	repo := soldOutRepo{coupon: domain.Coupon{ID: uuid.New(), Code: "A0001", TotalQuantity: 300, IssuedQuantity: 300,
		OpensAt: time.Now().Add(-time.Hour)}, holder: holder}
	facts := &oneNotice{msg: "another-instance A0001 s", delivered: make(chan struct{})}
	s := New(repo, nil, Config{Engine: engine.Config{LockWait: time.Second, Facts: facts, Tracer: tracer}}, metrics.New(),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Warm(ctx); err != nil {
		b.Fatal(err)
	}
	go s.engine.Run(ctx)
	<-facts.delivered // the sold-out is confirmed and the holders loaded: the set is final
	users := make([]uuid.UUID, 1024)
	for i := range users {
		users[i] = uuid.New()
	}
	users[0] = holder
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

// soldOutRepo knows one sold-out coupon and its one holder; any other call panics (the
// embedded nil Repository).
type soldOutRepo struct {
	Repository
	coupon domain.Coupon
	holder uuid.UUID
}

func (r soldOutRepo) CouponByCode(context.Context, string) (domain.Coupon, error) {
	return r.coupon, nil
}

func (r soldOutRepo) ListCoupons(context.Context) ([]domain.Coupon, error) {
	return []domain.Coupon{r.coupon}, nil
}

func (r soldOutRepo) HoldersOf(context.Context, uuid.UUID) ([]uuid.UUID, error) {
	return []uuid.UUID{r.holder}, nil
}

// oneNotice is a facts bus that delivers one notice, and has handled it when delivered closes.
type oneNotice struct {
	msg       string
	delivered chan struct{}
}

func (n *oneNotice) Publish(context.Context, string) error { return nil }

func (n *oneNotice) Subscribe(ctx context.Context, handle func(string)) {
	handle(n.msg)
	close(n.delivered)
	<-ctx.Done()
}
