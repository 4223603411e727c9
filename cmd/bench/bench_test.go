package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"couponsvc/internal/testenv"
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
	testenv.Main(m)
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The quick bench of couponsvc on W1 and W2 against real servers (PostgreSQL, three Redis
// nodes, the couponsvc binary built from this repository): the invariants hold and the table
// prints. Speed is not asserted.
func TestQuickBenchCouponsvc(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	var out bytes.Buffer
	rep, err := run(ctx, options{
		Workloads: []string{"W1", "W2"}, Designs: []string{designCouponsvc}, Quick: true,
		Durable: false, Cap: 30 * time.Second, Settle: 500 * time.Millisecond, Log: testLog{t},
		CouponsvcBin: os.Getenv("BENCH_COUPONSVC_BIN"), // empty: build it from this repository
	}, &out)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	t.Log("\n" + out.String())
	if len(rep.results) != 2 {
		t.Fatalf("%d results, want 2 (W1, W2)", len(rep.results))
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
		"| design | workload | requests | req/s | issued/s |",
		"| couponsvc | W1 |", "| couponsvc | W2 |",
		"### Targets of issue 4",
		"| W1 p99 latency (ms) |", "| W2 FCFS precision |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
