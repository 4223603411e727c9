package engine

import (
	"context"
	"time"

	"couponsvc/repository"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Traces of the issue path. They exist only when Config.Tracer is set: every hook is behind a
// nil check of it, so with traces off the issue path starts no span, not even a no-op one.
//
// A request's server span (the handler's) gets the issue's outcome (coupon.result) and, once
// it is answered, children drawn from the times its batch recorded:
//   - coupon.queued: from joining the coupon's queue to being taken into a batch (or forwarded,
//     or answered without one: LOCK_TIMEOUT, UNAVAILABLE);
//   - coupon.lock: the acquisition of the coupon's lock by the grant that served it, when that
//     happened while the request waited;
//   - coupon.transaction: its batch's transaction; or coupon.forward, for a request another
//     instance (the coupon's owner) served;
//   - a link to its batch's span, here or on the owner.
//
// A batch has ONE span, coupon.batch, a trace root of its own (a batch serves requests of many
// traces), linked to the span of every request it served, forwarded ones included (their trace
// context travels with them, package peer), and to its grant's coupon.lock span. Its child
// coupon.transaction is the statement and commit. A forwarded batch's call is a client span,
// coupon.forward, whose trace the owner's server span continues.

// Attribute keys of the issue path's spans.
const (
	attrCoupon    = attribute.Key("coupon.code")
	AttrResult    = attribute.Key("coupon.result")
	attrBatchSize = attribute.Key("coupon.batch.size")
	attrFence     = attribute.Key("coupon.lock.fence")
	attrIssued    = attribute.Key("coupon.batch.issued")
	attrPeer      = attribute.Key("coupon.peer")
	attrLink      = attribute.Key("coupon.link")
)

// batchTrace is what a request's span learns of the batch that served it. It travels in the
// request's outcome (never shared before that), and exists only when traces are on.
type batchTrace struct {
	span               trace.SpanContext // the batch's span (here, or on the owner)
	taken              time.Time         // the request left the queue: into the batch, or forwarded
	lockStart, lockEnd time.Time         // the acquisition of the grant (zero when forwarded)
	txStart, txEnd     time.Time         // the batch's transaction (zero when forwarded)
	size               int
	fence              int64
	forwardedTo        string // the owner that served it, when forwarded
}

// grant is the trace of one grant of a coupon's lock: when its acquisition began and ended,
// and its span. Zero when traces are off.
type grant struct {
	start, end time.Time
	span       trace.SpanContext
}

// traceGrant records the acquisition of a coupon's lock, from start to now, as a span.
func (s *Engine) traceGrant(ctx context.Context, code string, m Mutex, start time.Time) grant {
	if s.cfg.Tracer == nil {
		return grant{}
	}
	end := time.Now()
	fence, _ := m.Fence(ctx)
	_, span := s.cfg.Tracer.Start(context.Background(), "coupon.lock", trace.WithNewRoot(), trace.WithTimestamp(start),
		trace.WithAttributes(attrCoupon.String(code), attrFence.Int64(fence)))
	span.End(trace.WithTimestamp(end))
	return grant{start: start, end: end, span: span.SpanContext()}
}

// startBatch starts a batch's span, linked to its grant's and to its requests' spans.
func (s *Engine) startBatch(code string, g grant, batch []*issueRequest) (trace.Span, *batchTrace) {
	links := make([]trace.Link, 0, len(batch)+1)
	if g.span.IsValid() {
		links = append(links, trace.Link{SpanContext: g.span, Attributes: []attribute.KeyValue{attrLink.String("lock")}})
	}
	for _, r := range batch {
		if r.span.IsValid() {
			links = append(links, trace.Link{SpanContext: r.span, Attributes: []attribute.KeyValue{attrLink.String("request")}})
		}
	}
	now := time.Now()
	_, span := s.cfg.Tracer.Start(context.Background(), "coupon.batch", trace.WithNewRoot(), trace.WithTimestamp(now),
		trace.WithLinks(links...), trace.WithAttributes(attrCoupon.String(code), attrBatchSize.Int(len(batch))))
	return span, &batchTrace{span: span.SpanContext(), taken: now, lockStart: g.start, lockEnd: g.end, size: len(batch)}
}

// endBatch ends a batch's span, with its transaction as a child and what it decided.
func (s *Engine) endBatch(span trace.Span, bt *batchTrace, results []repository.Result, err error) {
	defer span.End()
	span.SetAttributes(attrFence.Int64(bt.fence))
	if !bt.txStart.IsZero() {
		_, tx := s.cfg.Tracer.Start(trace.ContextWithSpan(context.Background(), span), "coupon.transaction",
			trace.WithTimestamp(bt.txStart), trace.WithAttributes(attrBatchSize.Int(bt.size), attrFence.Int64(bt.fence)))
		if err != nil {
			tx.RecordError(err)
			tx.SetStatus(codes.Error, err.Error())
		}
		tx.End(trace.WithTimestamp(bt.txEnd))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return
	}
	issued := 0
	for _, r := range results {
		if r.Outcome == repository.Issued {
			issued++
		}
	}
	span.SetAttributes(attrIssued.Int(issued))
}

// traceRequest adds to a request's span (in ctx) the children drawn from its batch's times
// (bt nil: answered without a batch) and the link to its batch's span.
func (s *Engine) traceRequest(ctx context.Context, req *issueRequest, bt *batchTrace) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	child := func(name string, from, to time.Time, opts ...trace.SpanStartOption) {
		_, c := s.cfg.Tracer.Start(ctx, name, append(opts, trace.WithTimestamp(from))...)
		c.End(trace.WithTimestamp(to))
	}
	if bt == nil {
		child("coupon.queued", req.enqueued, time.Now())
		return
	}
	child("coupon.queued", req.enqueued, bt.taken)
	batch := trace.Link{SpanContext: bt.span, Attributes: []attribute.KeyValue{attrLink.String("batch")}}
	if bt.span.IsValid() {
		span.AddLink(batch)
	}
	if bt.forwardedTo != "" {
		child("coupon.forward", bt.taken, time.Now(), trace.WithLinks(batch), trace.WithAttributes(attrPeer.String(bt.forwardedTo)))
		return
	}
	if bt.lockEnd.After(req.enqueued) {
		child("coupon.lock", maxTime(bt.lockStart, req.enqueued), bt.lockEnd, trace.WithAttributes(attrFence.Int64(bt.fence)))
	}
	if !bt.txStart.IsZero() {
		child("coupon.transaction", bt.txStart, bt.txEnd, trace.WithLinks(batch),
			trace.WithAttributes(attrBatchSize.Int(bt.size), attrFence.Int64(bt.fence)))
	}
}

// startForward starts the client span of a call that forwards requests to another instance,
// linked to their spans; its context goes with the call (traceparent).
func (s *Engine) startForward(ctx context.Context, addr string, items []*outItem) (context.Context, trace.Span) {
	var links []trace.Link
	for _, it := range items {
		for _, r := range it.batch {
			if r.span.IsValid() {
				links = append(links, trace.Link{SpanContext: r.span, Attributes: []attribute.KeyValue{attrLink.String("request")}})
			}
		}
	}
	return s.cfg.Tracer.Start(ctx, "coupon.forward", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(links...), trace.WithAttributes(attrPeer.String(addr), attribute.Int("coupon.forward.coupons", len(items))))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
