// Command bench measures couponsvc against a faithful Go port of the reference design (a
// Redisson-style lock around "read count, check, insert, increment"), on the same machine, with
// the same workloads, back to back, and prints a markdown table next to the machine's physical
// references (pgbench one-row and spread-row transactions, redis-benchmark).
//
// It starts a throwaway durable PostgreSQL and three redis-servers, builds couponsvc and runs it
// as subprocesses (so their RSS can be read from /proc), runs the reference design the same way
// (this binary re-executed with the hidden argument "reference-server"), drives the four
// four workloads and three more (W5: 100 coupons at once; W6: the opening moment of a
// coupon created through the admin API, couponsvc only; W7: the sold-out crowd W1 with identity
// on, every request with its user's bearer token, couponsvc only) with a built-in load
// generator, and checks the invariants in PostgreSQL after each one.
//
// Each design runs in each deployment: one instance reached directly, one instance behind an
// nginx configured like ingress-nginx (internal/testenv.StartNginx), and N instances behind it
// (-instances, default 3), all instances of a run on the same PostgreSQL and the same three
// Redis nodes, each run on a fresh database and empty Redis nodes.
//
//	go run ./cmd/bench [-workloads W1,W2,W3,W4,W5,W6,W7] [-designs couponsvc,reference]
//	    [-deployments direct,nginx-1,nginx-N] [-instances 3] [-quick] [-out FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	designCouponsvc = "couponsvc"
	designReference = "reference"
	// roleEnv selects the hidden reference-server role when this binary (or the test binary)
	// is re-executed; the argument "reference-server" does the same for the bench binary.
	roleEnv = "COUPONSVC_BENCH_ROLE"
)

// options is what one bench run does.
type options struct {
	Workloads    []string      // W1..W7
	Designs      []string      // couponsvc, reference
	Deployments  []deployment  // how the instances are reached; none = one instance, direct
	Quick        bool          // scaled-down sizes
	Durable      bool          // PostgreSQL durability settings at their defaults (the bench); tests turn them off
	References   bool          // run pgbench and redis-benchmark first
	CouponsvcBin string        // prebuilt couponsvc binary; empty = build it from the repo
	RepoDir      string        // the couponsvc module's root; empty = find it
	Cap          time.Duration // time limit of one workload's load phase
	Settle       time.Duration // wait after the load before reading goroutines again
	Out          string        // also write the markdown here
	Dashboard    string        // also draw the dashboard of DashWorkload's widest deployment here
	DashWorkload string        // the workload whose dashboard is drawn (next to Out, and at Dashboard); "" = dashWorkload
	RefRedisPool int           // the reference design's go-redis pool size per node; 0 = go-redis default
	Log          io.Writer     // progress lines
}

func main() {
	if (len(os.Args) > 1 && os.Args[1] == "reference-server") || os.Getenv(roleEnv) == "reference-server" {
		if err := serveReference(); err != nil {
			fmt.Fprintln(os.Stderr, "reference-server:", err)
			os.Exit(1)
		}
		return
	}
	// The load generator shares the machine's CPUs with what it measures; collecting its
	// garbage less often leaves more of them to the servers. Both designs get the same client.
	// (The servers it starts keep the Go defaults, or the GOGC the caller set.)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	rep, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if !rep.invariantsOK() {
		fmt.Fprintln(os.Stderr, "bench: an invariant check FAILED (see the table)")
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	workloads := fs.String("workloads", strings.Join(allWorkloads, ","), "comma-separated workloads to run")
	designs := fs.String("designs", "couponsvc,reference", "comma-separated designs to run")
	deployments := fs.String("deployments", "direct,nginx-1,nginx-N", "comma-separated deployments: direct (one instance, no proxy), "+
		"nginx-K (K instances behind nginx configured like ingress-nginx), nginx-N (-instances of them)")
	instances := fs.Int("instances", 3, "N: the number of instances of the nginx-N deployment")
	quick := fs.Bool("quick", false, "scaled-down sizes for a fast smoke run")
	out := fs.String("out", "", "also write the markdown report to this file")
	bin := fs.String("couponsvc-bin", "", "use this couponsvc binary instead of building one")
	capD := fs.Duration("cap", 90*time.Second, "time limit of one workload's load phase (requests not sent by then are skipped and reported)")
	noRefs := fs.Bool("no-references", false, "skip the physical references (pgbench, redis-benchmark)")
	refPool := fs.Int("reference-redis-pool", 0, "the reference design's go-redis pool size per Redis node (0 = go-redis default, 10 per CPU; Redisson's default is 64)")
	dash := fs.String("dashboard", "", "also draw the Grafana dashboard's panels, from the scrapes of -dashboard-workload's run with the most instances, to this PNG file (make bench: docs/dashboard.png)")
	dashWl := fs.String("dashboard-workload", dashWorkload, "the workload whose dashboard is drawn (next to -out as charts/dashboard-*.png, and at -dashboard)")
	settle := fs.Duration("settle", 3*time.Second, "wait after the load before reading the service's goroutines again")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o := options{
		Workloads: splitList(*workloads), Designs: splitList(*designs), Quick: *quick, Durable: true,
		References: !*noRefs, CouponsvcBin: *bin, Cap: *capD, Settle: *settle, Out: *out, Log: os.Stderr,
		RefRedisPool: *refPool, Dashboard: *dash, DashWorkload: *dashWl,
	}
	for _, w := range o.Workloads {
		if !slices.Contains(allWorkloads, w) {
			return options{}, fmt.Errorf("-workloads: unknown workload %q (want one of %s)", w, strings.Join(allWorkloads, ", "))
		}
	}
	if *instances < 1 {
		return options{}, fmt.Errorf("-instances %d: want at least 1", *instances)
	}
	for _, name := range splitList(*deployments) {
		d, err := parseDeployment(name, *instances)
		if err != nil {
			return options{}, fmt.Errorf("-deployments: %w", err)
		}
		if !slices.Contains(o.Deployments, d) {
			o.Deployments = append(o.Deployments, d)
		}
	}
	if !slices.Contains(allWorkloads, o.DashWorkload) {
		return options{}, fmt.Errorf("-dashboard-workload: unknown workload %q", o.DashWorkload)
	}
	for _, d := range o.Designs {
		if d != designCouponsvc && d != designReference {
			return options{}, fmt.Errorf("-designs: unknown design %q (want couponsvc, reference)", d)
		}
	}
	if len(o.Workloads) == 0 || len(o.Designs) == 0 || len(o.Deployments) == 0 {
		return options{}, errors.New("nothing to run")
	}
	return o, nil
}

// deployment is how a design's instances are reached: one instance directly, or some instances
// behind nginx.
type deployment struct {
	instances int
	nginx     bool
}

var direct = deployment{instances: 1}

func (d deployment) String() string {
	if !d.nginx {
		return "direct"
	}
	return fmt.Sprintf("%d behind nginx", d.instances)
}

// parseDeployment reads "direct", "nginx-K" or "nginx-N" (n instances).
func parseDeployment(name string, n int) (deployment, error) {
	if name == "direct" {
		return direct, nil
	}
	if k, ok := strings.CutPrefix(name, "nginx-"); ok {
		if k == "N" || k == "n" {
			return deployment{instances: n, nginx: true}, nil
		}
		if i, err := strconv.Atoi(k); err == nil && i >= 1 {
			return deployment{instances: i, nginx: true}, nil
		}
	}
	return deployment{}, fmt.Errorf("unknown deployment %q (want direct, nginx-K or nginx-N)", name)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (o options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "bench: "+format+"\n", args...)
	}
}
