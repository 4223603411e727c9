package handler

import (
	"couponsvc/internal/peer"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// traceContext reads and writes W3C trace context headers (traceparent, tracestate).
var traceContext propagation.TraceContext

// traceRequest is the middleware of traces on (it is not installed when they are off): a
// server span per request, named by its route template ("POST /api/v1/coupons/:code/issue"),
// with the status code and the coupon code; the service adds the outcome and the
// spans of its queue, lock, transaction and batch (service/trace.go).
//
// A request from another instance (peer.Route) continues the sender's trace from its
// traceparent header. A public request starts a trace of its own and only links to the
// trace context its client sent: a crowd must not decide what is sampled (as otelhttp's
// WithPublicEndpoint).
func (h *Handler) traceRequest(c *gin.Context) {
	route := c.FullPath()
	name := c.Request.Method
	if route != "" {
		name += " " + route
	}
	ctx := c.Request.Context()
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		semconv.HTTPRequestMethodKey.String(c.Request.Method), semconv.HTTPRoute(route), semconv.URLPath(c.Request.URL.Path))}
	remote := trace.SpanContextFromContext(traceContext.Extract(ctx, propagation.HeaderCarrier(c.Request.Header)))
	switch {
	case route == peer.Route && remote.IsValid():
		ctx = trace.ContextWithRemoteSpanContext(ctx, remote)
	case remote.IsValid():
		opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: remote}))
	}
	ctx, span := h.tracer.Start(ctx, name, opts...)
	defer span.End()
	if code := c.Param("code"); code != "" {
		span.SetAttributes(attribute.String("coupon.code", code))
	}
	c.Request = c.Request.WithContext(ctx)
	c.Next()
	status := c.Writer.Status()
	span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 { // a 4xx is the client's, not this service's error (semantic conventions)
		span.SetStatus(codes.Error, "")
	}
}
