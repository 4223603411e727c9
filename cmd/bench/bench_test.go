package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The bench re-executes its own binary as the reference design's server; under go test
	// that binary is this test binary.
	if os.Getenv(roleEnv) == "reference-server" {
		if err := serveReference(); err != nil {
			fmt.Fprintln(os.Stderr, "reference-server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Not testenv.Main: these tests use no shared server of testenv (run starts its own), and
	// the couponsvc built for them is removed before the exit.
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// couponsvcBin builds couponsvc once for the tests of this package (BENCH_COUPONSVC_BIN, when
// set, names a prebuilt one).
var couponsvcBin = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("BENCH_COUPONSVC_BIN"); p != "" {
		return p, nil
	}
	dir, err := os.MkdirTemp("", "couponsvc-bench-test-")
	if err != nil {
		return "", err
	}
	builtDir = dir
	return couponsvcBinary(context.Background(), options{}, dir)
})

var builtDir string

func testBinary(t *testing.T) string {
	t.Helper()
	p, err := couponsvcBin()
	if err != nil {
		t.Fatalf("build couponsvc: %v", err)
	}
	return p
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The quick bench of couponsvc on W1, W2 and W7 (W1 with identity on) against real servers
// (PostgreSQL, three Redis nodes, the couponsvc binary built from this repository): the
// invariants hold, every W7 request's token is accepted, and the tables print. Speed is not
// asserted.
func TestQuickBenchCouponsvc(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	rep, err := run(ctx, options{
		Workloads: []string{"W1", "W2", "W7"}, Designs: []string{designCouponsvc}, Quick: true,
		Durable: false, Cap: 30 * time.Second, Settle: 500 * time.Millisecond, Log: testLog{t},
		CouponsvcBin: testBinary(t),
	}, &out)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	t.Log("\n" + out.String())
	if len(rep.results) != 3 {
		t.Fatalf("%d results, want 3 (W1, W2, W7)", len(rep.results))
	}
	if w7 := rep.find(designCouponsvc, direct, "W7"); w7 == nil || w7.status(401) > 0 || w7.status(201) != 300 {
		t.Errorf("W7: %v; want every token accepted and the 300 coupons issued", w7.byAnswer())
	}
	for _, r := range rep.results {
		if !r.inv.ok {
			t.Errorf("%s %s: invariants %s", r.design, r.workload.name, r.inv)
		}
		stock := 0
		for _, s := range r.workload.stock {
			stock += s
		}
		if got := r.status(201); got == 0 || got > stock {
			t.Errorf("%s %s: %d answers 201 for a stock of %d", r.design, r.workload.name, got, stock)
		}
		if r.sent() != len(r.workload.reqs) {
			t.Errorf("%s %s: %d of %d requests sent", r.design, r.workload.name, r.sent(), len(r.workload.reqs))
		}
	}
	md := out.String()
	for _, want := range []string{
		"| design | deployment | workload | requests | req/s | issued/s |",
		"| couponsvc | direct | W1 |", "| couponsvc | direct | W2 |",
		"### Targets, direct",
		"| W1 p99 latency (ms) |", "| W2 FCFS precision |",
		"| couponsvc | direct | W7 |", "### Identity mode: what verifying tokens costs (W7 vs W1, same run)",
		"µs per request (process_cpu_seconds_total)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// The quick bench in the deployed shape: two instances behind nginx (configured like
// ingress-nginx), both designs on W5 (many coupons), couponsvc on W6 (the opening moment,
// coupon created through the admin API): the invariants hold, every request went through nginx
// to an instance (no transport error, no 502), and the new figures print.
func TestQuickBenchBehindNginx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dep, err := parseDeployment("nginx-N", 2)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := run(ctx, options{
		Workloads: []string{"W5", "W6"}, Designs: []string{designCouponsvc, designReference},
		Deployments: []deployment{dep}, Quick: true, Durable: false, Cap: 30 * time.Second,
		Settle: 500 * time.Millisecond, Log: testLog{t}, CouponsvcBin: testBinary(t),
	}, &out)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	t.Log("\n" + out.String())
	// W6 runs couponsvc only: the reference design has no issuing windows.
	if len(rep.results) != 3 {
		t.Fatalf("%d results, want 3 (W5 for both designs, W6 for couponsvc)", len(rep.results))
	}
	for _, r := range rep.results {
		name := r.design + " " + r.workload.name
		if r.deployment != dep {
			t.Errorf("%s: deployment %s, want %s", name, r.deployment, dep)
		}
		if !r.inv.ok {
			t.Errorf("%s: invariants %s", name, r.inv)
		}
		if n := r.count(func(s sample) bool { return s.status == 0 || s.status == 502 }); n > 0 {
			t.Errorf("%s: %d transport errors or 502s through nginx; %s; %s", name, n, r.byAnswer(), strings.Join(r.notes, "; "))
		}
		stock := 0
		for _, s := range r.workload.stock {
			stock += s
		}
		if got := r.status(201); got == 0 || got > stock {
			t.Errorf("%s: %d answers 201 for a stock of %d", name, got, stock)
		}
	}
	w6 := rep.find(designCouponsvc, dep, "W6")
	if w6 == nil || w6.open == nil {
		t.Fatal("no W6 figures")
	}
	if f := w6.open; f.issuedBefore != 0 || !f.soldOut || f.sentBefore == 0 {
		t.Errorf("W6: %+v, want nothing issued before the opening, requests sent before it, and the coupon sold out", *f)
	}
	md := out.String()
	for _, want := range []string{
		"| couponsvc | 2 behind nginx | W5 |", "| reference | 2 behind nginx | W5 |", "| couponsvc | 2 behind nginx | W6 |",
		"latest winner after the boundary (ms)", "### The opening moment (W6)", "W6 runs couponsvc only",
		"over 100 coupons", "of the 500 in stock issued",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestParseFlagsDeployments(t *testing.T) {
	o, err := parseFlags([]string{"-deployments", "direct,nginx-1,nginx-N,nginx-3", "-instances", "3"})
	if err != nil {
		t.Fatal(err)
	}
	want := []deployment{direct, {1, true}, {3, true}}
	if fmt.Sprint(o.Deployments) != fmt.Sprint(want) {
		t.Errorf("deployments %v, want %v (nginx-3 and nginx-N are the same)", o.Deployments, want)
	}
	if _, err := parseFlags([]string{"-deployments", "k8s"}); err == nil {
		t.Error("unknown deployment accepted")
	}
}
