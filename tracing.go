package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Traces (OpenTelemetry) are on when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-only
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and off otherwise: then no tracer exists at all,
// and the issue path does not even start a no-op span (a no-op span still allocates a context).
// Everything else is the SDK's and the exporter's to read from the environment as the
// OpenTelemetry specification says: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, _TIMEOUT,
// _COMPRESSION, _CERTIFICATE. OTEL_SDK_DISABLED=true turns traces off whatever is set.
//
// The exporter is OTLP over HTTP (protobuf): every collector, Jaeger and Tempo take it, and it
// needs no gRPC stack in the binary.

// tracingShutdown bounds the flush of the spans still buffered when the service stops.
const tracingShutdown = 5 * time.Second

// tracing is the service's tracer provider; nil when traces are off.
type tracing struct {
	provider *sdktrace.TracerProvider
}

// newTracing starts the tracer provider when traces are on (see above), or when spans is not
// nil (tests: a span processor of their own instead of the OTLP exporter). It returns nil when
// traces are off.
func newTracing(ctx context.Context, cfg config, getenv func(string) string, spans sdktrace.SpanProcessor) (*tracing, error) {
	tracesEndpoint := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
	on := cfg.OTLPEndpoint != "" || tracesEndpoint != ""
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") || (!on && spans == nil) {
		return nil, nil
	}
	// service.name defaults to couponsvc; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// (read after it) override it.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("couponsvc"), semconv.ServiceVersion(version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) { // partial: what could be read is kept
		return nil, fmt.Errorf("traces: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if on {
		var eopts []otlptracehttp.Option
		if tracesEndpoint == "" {
			// OTEL_EXPORTER_OTLP_ENDPOINT is also a flag (and comes through getenv in tests),
			// so it is handed over rather than read again: as the specification says for
			// OTLP/HTTP, it is the base URL to which the signal's path is added.
			eopts = append(eopts, otlptracehttp.WithEndpointURL(strings.TrimRight(cfg.OTLPEndpoint, "/")+"/v1/traces"))
		}
		exp, err := otlptracehttp.New(ctx, eopts...)
		if err != nil {
			return nil, fmt.Errorf("traces: OTLP exporter: %w", err)
		}
		// The batch span processor exports off the request path (OTEL_BSP_* tune it).
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	if spans != nil {
		opts = append(opts, sdktrace.WithSpanProcessor(spans))
	}
	// No WithSampler: the SDK reads OTEL_TRACES_SAMPLER (default parentbased_always_on).
	return &tracing{provider: sdktrace.NewTracerProvider(opts...)}, nil
}

// tracerProvider is what the handler and the service take: nil when traces are off.
func (t *tracing) tracerProvider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.provider
}

// tracer is the named tracer of tp, or nil when traces are off (tp nil).
func tracer(tp trace.TracerProvider, name string) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(name)
}

// shutdown flushes the spans still buffered and stops the exporter.
func (t *tracing) shutdown(log *slog.Logger) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingShutdown)
	defer cancel()
	if err := t.provider.Shutdown(ctx); err != nil {
		log.Warn("traces: flushing the last spans", "err", err)
	}
}

// traceLog adds trace_id and span_id to the log lines written in the context of a recording
// span (a request's, when traces are on), so that a log line leads to its trace.
type traceLog struct{ slog.Handler }

func (h traceLog) Handle(ctx context.Context, r slog.Record) error {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		sc := span.SpanContext()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceLog) WithAttrs(as []slog.Attr) slog.Handler { return traceLog{h.Handler.WithAttrs(as)} }
func (h traceLog) WithGroup(name string) slog.Handler    { return traceLog{h.Handler.WithGroup(name)} }
