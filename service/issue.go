package service

import (
	"couponsvc/domain"

	"context"
	"errors"
	"log/slog"
	"time"

	"couponsvc/engine"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// Issue issues coupon code to userID, first come first served (package engine): a committed
// wallet entry, or domain.ErrCouponNotFound, domain.ErrAlreadyIssued, domain.ErrSoldOut,
// domain.ErrLockTimeout or domain.ErrUnavailable, in which case nothing was issued.
//
// The request's place in the queue is its arrival (see WithArrival), or the moment Issue is
// called.
func (s *Service) Issue(ctx context.Context, code string, userID uuid.UUID) (domain.WalletEntry, error) {
	start := time.Now()
	arrived, _ := ctx.Value(arrivalKey{}).(time.Time) // zero: now
	e, err := s.engine.Issue(ctx, code, userID, arrived)
	s.record(ctx, code, userID, start, err)
	return e, err
}

// record counts and logs the answer to an issue request that started at start.
func (s *Service) record(ctx context.Context, code string, userID uuid.UUID, start time.Time, err error) {
	result := resultOf(err)
	label := code
	if err != nil && (errors.Is(err, domain.ErrCouponNotFound) || !s.engine.Known(code)) {
		label = "_unknown" // codes of no known coupon must not grow the metric's label set
	}
	s.outcome(label, result).Inc()
	if s.cfg.Engine.Tracer != nil {
		trace.SpanFromContext(ctx).SetAttributes(engine.AttrResult.String(result))
	}
	switch result {
	case "error":
		s.log.ErrorContext(ctx, "issue failed", "coupon", code, "user", userID, "err", err)
	default:
		if s.log.Enabled(ctx, slog.LevelDebug) { // spare a crowd the arguments' allocations
			s.log.DebugContext(ctx, "issue", "coupon", code, "user", userID, "result", result,
				"duration_ms", float64(time.Since(start).Microseconds())/1000)
		}
	}
}

type arrivalKey struct{}

// WithArrival tells Issue when the request reached this host (package internal/arrival), so
// that first come, first served is by arrival, not by when this process got round to it.
func WithArrival(ctx context.Context, at time.Time) context.Context {
	return context.WithValue(ctx, arrivalKey{}, at)
}

// outcome is the issue counter series of a coupon and result, cached: the label set is bounded
// (existing codes, and "_unknown"), and hashing labels on every answer shows in a crowd.
func (s *Service) outcome(coupon, result string) prometheus.Counter {
	key := [2]string{coupon, result}
	if c, ok := s.outcomes.Load(key); ok {
		return c.(prometheus.Counter)
	}
	c, _ := s.outcomes.LoadOrStore(key, s.metrics.IssueOutcomes.WithLabelValues(coupon, result))
	return c.(prometheus.Counter)
}

// resultOf is the metrics' label for an outcome: "issued" for none, else the error's label.
func resultOf(err error) string {
	if err == nil {
		return "issued"
	}
	return domain.ErrorOf(err).Label
}

// Receive serves a batch of issue requests another instance sent to this one (see
// engine.Engine.Receive); they are counted in the issue metrics by the sender, which answers
// the client.
func (s *Service) Receive(ctx context.Context, b engine.PeerBatch) [][]engine.PeerResult {
	return s.engine.Receive(ctx, b)
}
