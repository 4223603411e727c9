package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

const issueRoute = "POST /api/v1/coupons/:code/issue"

// spansWhere waits (up to 10 s) until the recorder holds want spans that match, and returns
// them: spans end moments after their answers are sent.
func spansWhere(t *testing.T, rec *tracetest.SpanRecorder, want int, match func(sdktrace.ReadOnlySpan) bool) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if match(s) {
				out = append(out, s)
			}
		}
		if len(out) >= want {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d matching spans after 10s, want %d; ended: %s", len(out), want, spanNames(rec.Ended()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	return strings.Join(names, ", ")
}

func named(name string) func(sdktrace.ReadOnlySpan) bool {
	return func(s sdktrace.ReadOnlySpan) bool { return s.Name() == name }
}

func attr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// linksTo reports whether s has a link to the span sc.
func linksTo(s sdktrace.ReadOnlySpan, sc trace.SpanContext) bool {
	for _, l := range s.Links() {
		if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
			return true
		}
	}
	return false
}

// children are the spans of rec whose parent is s.
func children(rec *tracetest.SpanRecorder, s sdktrace.ReadOnlySpan) map[string]sdktrace.ReadOnlySpan {
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, c := range rec.Ended() {
		if c.Parent().SpanID() == s.SpanContext().SpanID() && c.SpanContext().TraceID() == s.SpanContext().TraceID() {
			out[c.Name()] = c
		}
	}
	return out
}

// waitInFlight waits (up to 10 s) until n issue requests are in progress in the instance.
func waitInFlight(t *testing.T, in *instance, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	want := "couponsvc_issue_inflight " + strconv.Itoa(n)
	for {
		a := do(t, http.MethodGet, in.base+"/metrics", "")
		if strings.Contains(string(a.body), want+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %d issue requests in flight after 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// One issue's span tree: the request's server span with its queued, lock and transaction
// children, the batch's span (one per batch, linked from every request it served) with its
// transaction, and two requests of other users served by the same batch linked to the same
// batch span.
func TestTracesOfAnIssue(t *testing.T) {
	st := newStack(t, 3)
	rec := tracetest.NewSpanRecorder()
	in := startInstanceWith(t, st.env(nil), rec)
	createCoupon(t, st.dsn, "TRACE", 10)

	// The first request's batch waits on the coupon's row; the two sent meanwhile queue and
	// share the next batch.
	release := holdCouponRow(t, st.dsn, "TRACE")
	users := distinctUsers(3)
	answers := make([]answer, 3)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); answers[0] = in.issue(t, "TRACE", users[0]) }()
	waitInFlight(t, in, 1)
	for i := 1; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = in.issue(t, "TRACE", users[i]) }()
	}
	waitInFlight(t, in, 3)
	time.Sleep(200 * time.Millisecond) // they are queued behind the first batch
	release()
	wg.Wait()
	for i, a := range answers {
		if a.status != http.StatusCreated {
			t.Fatalf("request %d: %d %s", i, a.status, a.body)
		}
	}

	reqs := spansWhere(t, rec, 3, named(issueRoute))
	// Each request's batch (the first request's alone, or with the others when they queued
	// while the lock was being acquired; then the others' together) has ended.
	for _, r := range reqs {
		spansWhere(t, rec, 1, func(b sdktrace.ReadOnlySpan) bool { return b.Name() == "coupon.batch" && linksTo(b, r.SpanContext()) })
	}
	batches := spansWhere(t, rec, 1, named("coupon.batch"))
	spansWhere(t, rec, 1, named("coupon.lock"))
	batchOf := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, b := range batches {
		batchOf[b.SpanContext().SpanID()] = b
		if b.Parent().IsValid() {
			t.Errorf("batch span has a parent: it must be a trace root of its own")
		}
		if got := attr(b, "coupon.code").AsString(); got != "TRACE" {
			t.Errorf("batch coupon.code %q", got)
		}
		if attr(b, "coupon.lock.fence").AsInt64() <= 0 {
			t.Errorf("batch without its fence: %v", b.Attributes())
		}
		if kids := children(rec, b); kids["coupon.transaction"] == nil {
			t.Errorf("batch span without its coupon.transaction child: %v", kids)
		}
	}
	served := map[trace.SpanID][]sdktrace.ReadOnlySpan{} // batch -> request spans linked to it
	lockChildren := 0
	for _, r := range reqs {
		if r.SpanKind() != trace.SpanKindServer {
			t.Errorf("request span kind %v", r.SpanKind())
		}
		if got := attr(r, "http.response.status_code").AsInt64(); got != 201 {
			t.Errorf("request span status code %d", got)
		}
		if got := attr(r, "http.route").AsString(); got != "/api/v1/coupons/:code/issue" {
			t.Errorf("request span http.route %q", got)
		}
		if got := attr(r, "coupon.code").AsString(); got != "TRACE" {
			t.Errorf("request span coupon.code %q", got)
		}
		if got := attr(r, "coupon.result").AsString(); got != "issued" {
			t.Errorf("request span coupon.result %q", got)
		}
		kids := children(rec, r)
		for _, name := range []string{"coupon.queued", "coupon.transaction"} {
			if kids[name] == nil {
				t.Errorf("request span without its %s child: %v", name, spanNames(rec.Ended()))
			}
		}
		if kids["coupon.lock"] != nil {
			lockChildren++
		}
		var linked []trace.SpanID
		for _, l := range r.Links() {
			if _, ok := batchOf[l.SpanContext.SpanID()]; ok {
				linked = append(linked, l.SpanContext.SpanID())
			}
		}
		if len(linked) != 1 {
			t.Fatalf("request span links to %d batch spans, want 1: %v", len(linked), r.Links())
		}
		b := batchOf[linked[0]]
		served[linked[0]] = append(served[linked[0]], r)
		if !linksTo(b, r.SpanContext()) {
			t.Errorf("batch span does not link back to the request span it served")
		}
		if tx := kids["coupon.transaction"]; tx != nil && !linksTo(tx, b.SpanContext()) {
			t.Errorf("the request's coupon.transaction does not link to its batch")
		}
	}
	if lockChildren == 0 {
		t.Errorf("no request span shows the lock acquisition it waited for")
	}
	shared := false
	for id, rs := range served {
		if got := attr(batchOf[id], "coupon.batch.size").AsInt64(); got != int64(len(rs)) {
			t.Errorf("batch size attribute %d, %d request spans linked to it", got, len(rs))
		}
		if len(rs) >= 2 && rs[0].SpanContext().TraceID() != rs[1].SpanContext().TraceID() {
			shared = true // requests of two traces (two users) linked to one batch span
		}
	}
	if !shared {
		t.Errorf("no batch span served both requests sent while the first batch waited: %d batches", len(served))
	}
}

// An issue forwarded to the coupon's owner: the owner's batch links to the request's span at
// the pod that received it, and that span links to the owner's batch (W3C trace context in the
// peer batch).
func TestTracesAcrossPods(t *testing.T) {
	st := newStack(t, 3)
	recs := []*tracetest.SpanRecorder{tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()}
	ins := []*instance{startInstanceWith(t, st.env(nil), recs[0]), startInstanceWith(t, st.env(nil), recs[1])}
	createCoupon(t, st.dsn, "HOPS", 10)
	// ins[0] becomes the owner and keeps the lock while requests keep coming (and 500 ms after).
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if a := ins[0].issue(t, "HOPS", uuid.New()); a.status != http.StatusCreated {
			t.Fatalf("owner: %d %s", a.status, a.body)
		}
		if a := ins[1].issue(t, "HOPS", uuid.New()); a.status != http.StatusCreated {
			t.Fatalf("forwarded: %d %s", a.status, a.body)
		}
		if len(namedIn(recs[1], "coupon.forward")) > 0 || time.Now().After(deadline) {
			break
		}
	}
	fwd := spansWhere(t, recs[1], 1, func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == issueRoute && children(recs[1], s)["coupon.forward"] != nil
	})[0]
	// The owner's batch span links to the request's span at the pod that received it.
	batch := spansWhere(t, recs[0], 1, func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "coupon.batch" && linksTo(s, fwd.SpanContext())
	})[0]
	if !linksTo(fwd, batch.SpanContext()) {
		t.Errorf("the forwarded request's span does not link to the owner's batch")
	}
	// The owner's server span of the peer call continues the sender's coupon.forward span.
	client := spansWhere(t, recs[1], 1, func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "coupon.forward" && s.SpanKind() == trace.SpanKindClient && linksTo(s, fwd.SpanContext())
	})[0]
	spansWhere(t, recs[0], 1, func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "POST /internal/v1/batch" && s.Parent().SpanID() == client.SpanContext().SpanID() &&
			s.SpanContext().TraceID() == client.SpanContext().TraceID()
	})
}

func namedIn(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name && s.SpanKind() == trace.SpanKindInternal {
			out = append(out, s)
		}
	}
	return out
}

// The request's log lines carry its trace_id and span_id; lines outside a request do not.
func TestLogsCarryTraceID(t *testing.T) {
	st := newStack(t, 1)
	rec := tracetest.NewSpanRecorder()
	in := startInstanceWith(t, st.env(map[string]string{"LOG_LEVEL": "debug"}), rec)
	if a := in.issue(t, "A0001", uuid.New()); a.status != http.StatusCreated {
		t.Fatalf("%d %s", a.status, a.body)
	}
	req := spansWhere(t, rec, 1, named(issueRoute))[0]
	var line map[string]any
	for _, l := range strings.Split(in.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		switch m["msg"] {
		case "issue":
			line = m
		case "serving":
			if _, ok := m["trace_id"]; ok {
				t.Errorf("a line outside any request carries a trace_id: %v", m)
			}
		}
	}
	if line == nil {
		t.Fatalf("no issue line logged:\n%s", in.logs.String())
	}
	if line["trace_id"] != req.SpanContext().TraceID().String() || line["span_id"] != req.SpanContext().SpanID().String() {
		t.Errorf("issue line %v, want trace_id %s span_id %s", line, req.SpanContext().TraceID(), req.SpanContext().SpanID())
	}
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, the service exports its spans over OTLP/HTTP
// (protobuf, POST /v1/traces) through run's own setup, reading the standard OTEL_* variables
// (here OTEL_SERVICE_NAME and the batch processor's delay).
func TestTracesExportedOverOTLP(t *testing.T) {
	var mu sync.Mutex
	var got []*collectortrace.ExportTraceServiceRequest
	var bad []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			bad = append(bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		} else if err := proto.Unmarshal(body, &req); err != nil {
			bad = append(bad, err.Error())
		} else {
			got = append(got, &req)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		resp, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(resp)
	}))
	defer collector.Close()
	// The SDK reads these from the process environment, as the specification says.
	t.Setenv("OTEL_SERVICE_NAME", "couponsvc-under-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	st := newStack(t, 1)
	in := startInstance(t, st.env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL}))
	if a := in.issue(t, "A0001", uuid.New()); a.status != http.StatusCreated {
		t.Fatalf("%d %s", a.status, a.body)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		names, service := map[string]bool{}, ""
		for _, req := range got {
			for _, rs := range req.ResourceSpans {
				for _, kv := range rs.GetResource().GetAttributes() {
					if kv.Key == "service.name" {
						service = kv.GetValue().GetStringValue()
					}
				}
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						names[s.Name] = true
					}
				}
			}
		}
		problems := append([]string(nil), bad...)
		mu.Unlock()
		if len(problems) > 0 {
			t.Fatalf("the collector got what is not an OTLP/HTTP protobuf export: %v", problems)
		}
		if names[issueRoute] && names["coupon.batch"] && names["coupon.lock"] {
			if service != "couponsvc-under-test" {
				t.Errorf("service.name %q: OTEL_SERVICE_NAME not applied", service)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spans exported within 15s: %v", names)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
