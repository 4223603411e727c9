package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"couponsvc/internal/testenv"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// env is the throwaway infrastructure shared by every design and workload.
type env struct {
	pg     *testenv.Postgres
	redis  []*testenv.Redis
	tmp    string
	svcBin string // couponsvc binary
	refBin string // binary that serves the reference design (this one)
	refEnv []string
}

func (e *env) close() {
	for _, r := range e.redis {
		r.Close()
	}
	if e.pg != nil {
		e.pg.Close()
	}
	if e.tmp != "" {
		os.RemoveAll(e.tmp)
	}
}

func (e *env) redisAddrs() string { return strings.Join(testenv.Addrs(e.redis), ",") }

// run starts the infrastructure, runs the references and every design on every workload, and
// writes the markdown report to stdout (and o.Out).
func run(ctx context.Context, o options, stdout io.Writer) (*report, error) {
	started := time.Now()
	e := &env{}
	defer e.close()
	var err error
	if e.tmp, err = os.MkdirTemp("", "couponsvc-bench-"); err != nil {
		return nil, err
	}
	rep := &report{opts: o, machine: describeMachine(o)}

	if containsStr(o.Designs, designCouponsvc) {
		if e.svcBin, err = couponsvcBinary(ctx, o, e.tmp); err != nil {
			return nil, err
		}
	}
	if containsStr(o.Designs, designReference) {
		if e.refBin, err = os.Executable(); err != nil {
			return nil, err
		}
		e.refEnv = []string{roleEnv + "=reference-server"}
		if o.RefRedisPool > 0 {
			e.refEnv = append(e.refEnv, fmt.Sprintf("REFERENCE_REDIS_POOL_SIZE=%d", o.RefRedisPool))
		}
	}
	// The reference design reuses couponsvc's schema: couponsvc migrate creates it.
	if e.svcBin == "" {
		if e.svcBin, err = couponsvcBinary(ctx, o, e.tmp); err != nil {
			return nil, err
		}
	}

	o.logf("starting PostgreSQL (durable=%v) and three redis-servers", o.Durable)
	// pg_stat_statements tells how long the batch statement ran inside PostgreSQL, against
	// the time the service saw; a server without the library runs without it.
	if e.pg, err = testenv.StartPostgres(o.Durable, "shared_preload_libraries=pg_stat_statements"); err != nil {
		o.logf("PostgreSQL with pg_stat_statements: %v; starting it without", err)
		if e.pg, err = testenv.StartPostgres(o.Durable); err != nil {
			return nil, err
		}
	}
	for range 3 {
		r, err := testenv.StartRedis()
		if err != nil {
			return nil, err
		}
		e.redis = append(e.redis, r)
	}
	rep.machine.postgres = commandVersion(filepath.Join(e.pg.BinDir(), "postgres"), "--version")

	if o.References {
		rep.refs = runReferences(ctx, o, e)
	}
	deployments := o.Deployments
	if len(deployments) == 0 {
		deployments = []deployment{direct}
	}
	for _, w := range o.Workloads {
		for _, dep := range deployments {
			for _, d := range o.Designs {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				if why := referenceSkips(w); d == designReference && why != "" {
					rep.skipped = appendOnce(rep.skipped, fmt.Sprintf("%s runs couponsvc only: %s", w, why))
					continue
				}
				wl := buildWorkload(w, o.Quick)
				o.logf("%s (%s) on %s: %s clients", d, dep, w, thousands(wl.clients))
				res, err := runOne(ctx, o, e, d, dep, wl)
				if err != nil {
					return nil, fmt.Errorf("%s (%s) on %s: %w", d, dep, w, err)
				}
				o.logf("%s (%s) on %s: %s requests, %.0f req/s, %.0f issued/s, p99 %s ms, invariants %s", d, dep, w,
					thousands(res.sent()), res.reqPerSec(), res.issuedPerSec(), fmtMs(res.pct(0.99)), res.invariantsText())
				rep.results = append(rep.results, res)
			}
		}
	}
	rep.elapsed = time.Since(started)
	if o.Out != "" {
		// The charts go next to the report, which links them; a chart that cannot be drawn
		// costs its picture, not the run's figures.
		charts, err := writeCharts(rep, filepath.Dir(o.Out))
		if err != nil {
			o.logf("charts: %v", err)
		}
		rep.charts = charts
		o.logf("wrote %d charts in %s", len(charts), filepath.Join(filepath.Dir(o.Out), chartsDir))
	}
	if o.Out != "" || o.Dashboard != "" {
		wl := cmp.Or(o.DashWorkload, dashWorkload)
		dir := ""
		if o.Out != "" {
			dir = filepath.Dir(o.Out)
		}
		dashes, err := writeDashboards(rep, dir, wl, o.Dashboard)
		if err != nil {
			o.logf("dashboard: %v", err)
		}
		rep.dashboards = dashes
		if o.Dashboard != "" && err == nil {
			o.logf("wrote the dashboard of %s at %s", wl, o.Dashboard)
		}
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if o.Out != "" {
		if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
			return rep, err
		}
		if err := os.WriteFile(o.Out, []byte(md), 0o644); err != nil {
			return rep, err
		}
		o.logf("wrote %s", o.Out)
	}
	return rep, nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func appendOnce(list []string, s string) []string {
	if containsStr(list, s) {
		return list
	}
	return append(list, s)
}

// runOne runs one design in one deployment on one workload, on a fresh database and empty
// Redis nodes: its instances (all on that database and those nodes), nginx in front of them
// when the deployment says so, the load, then the invariant checks.
func runOne(ctx context.Context, o options, e *env, design string, dep deployment, wl *workload) (*result, error) {
	for _, r := range e.redis { // no lock, fence or cached fact from the previous run
		c := redis.NewClient(&redis.Options{Addr: r.Addr})
		err := c.FlushAll(ctx).Err()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("flush redis %s: %w", r.Addr, err)
		}
	}
	dsn, err := e.pg.NewDatabase()
	if err != nil {
		return nil, err
	}
	base := []string{"DATABASE_URL=" + dsn, "REDIS_ADDRS=" + e.redisAddrs(), "LOG_LEVEL=warn"}
	mctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	mig := exec.CommandContext(mctx, e.svcBin, "migrate")
	mig.Env = append(os.Environ(), base...)
	out, err := mig.CombinedOutput()
	cancel()
	if err != nil {
		return nil, fmt.Errorf("couponsvc migrate: %v\n%s", err, out)
	}
	if err := createCoupons(ctx, dsn, wl.extra); err != nil {
		return nil, err
	}

	var bin string
	var extraEnv []string
	switch design {
	case designCouponsvc:
		bin = e.svcBin
	case designReference:
		bin, extraEnv = e.refBin, e.refEnv
	}
	if wl.opening != nil {
		extraEnv = append(slices.Clone(extraEnv), "ADMIN_TOKEN="+adminToken)
	}
	if wl.identity {
		idEnv, stopIdentity, err := startIdentity(o, wl)
		if err != nil {
			return nil, fmt.Errorf("identity provider: %w", err)
		}
		defer stopIdentity()
		extraEnv = append(slices.Clone(extraEnv), idEnv...)
	}
	var srvs []*server
	defer func() {
		for _, s := range srvs {
			s.stop()
		}
	}()
	var upstreams []string
	for i := range dep.instances {
		logPath := filepath.Join(e.tmp, fmt.Sprintf("%s-%s-%s-%d.log", design, wl.name, strings.ReplaceAll(dep.String(), " ", "-"), i))
		srv, err := startServer(ctx, bin, []string{"serve"}, append(base, extraEnv...), logPath)
		if err != nil {
			return nil, err
		}
		srvs = append(srvs, srv)
		upstreams = append(upstreams, strings.TrimPrefix(srv.base, "http://"))
	}
	target := srvs[0].base
	var proxy *testenv.Nginx
	if dep.nginx {
		if proxy, err = testenv.StartNginx(upstreams); err != nil {
			return nil, err
		}
		defer proxy.Close()
		target = proxy.URL
	}

	res := &result{design: design, deployment: dep, workload: wl, loadAvg: loadAvg1()}
	res.goroutinesBefore = goroutinesOf(ctx, srvs)
	lc := newLoadClient(wl.clients)
	defer lc.close()
	if err := lc.prewarm(ctx, target, wl.clients); err != nil {
		return nil, fmt.Errorf("opening %d connections: %w", wl.clients, err)
	}
	limit := o.Cap
	if limit <= 0 {
		limit = time.Hour
	}
	// couponsvc's /metrics as Prometheus would scrape them, for the dashboard's picture.
	var scraper *dashScraper
	if design == designCouponsvc {
		scraper = startDashScraper(ctx, srvs)
		defer scraper.halt()
	}
	cpuBefore := cpuOf(ctx, srvs)
	loadStart := time.Now()
	if op := wl.opening; op != nil {
		op.limit = min(op.limit, limit)
		op.opensAt = time.Now().Add(op.lead)
		if err := createOpeningCoupon(ctx, target, op); err != nil {
			return nil, err
		}
		res.load, wl.reqs, wl.eligibleNs = lc.driveOpening(ctx, wl)
	} else {
		res.load = lc.drive(ctx, target, wl, limit)
	}
	if scraper != nil {
		res.dash = scraper.finish(ctx, loadStart)
	}
	res.cpuSeconds = cpuOf(ctx, srvs) - cpuBefore
	lc.close() // the clients leave: the service should return to its idle goroutine count
	if proxy != nil {
		proxy.Close() // and so do nginx's keep-alive connections to the instances
		if n := nginxErrors(proxy.ErrorLog()); n != "" {
			res.notes = append(res.notes, n)
		}
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.Settle):
	}
	res.goroutinesAfter = goroutinesOf(ctx, srvs)
	if design == designCouponsvc {
		res.notes = append(res.notes, insideCouponsvc(metricsOf(ctx, srvs), len(srvs), batchStatement(ctx, dsn)))
	}
	for i, srv := range srvs {
		res.peakRSS = max(res.peakRSS, srv.peakRSS())
		if err := srv.stop(); err != nil {
			o.logf("%s on %s: stopping instance %d: %v", design, wl.name, i, err)
		}
		if crashed := srv.exitedEarly(); crashed != "" {
			res.notes = append(res.notes, fmt.Sprintf("instance %d exited during the run: %s", i, crashed))
		}
	}
	res.inv = checkInvariants(ctx, dsn, res.load, wl.reqs)
	res.fcfs = fcfsPrecision(wl, res.load)
	if op := wl.opening; op != nil {
		before, last, err := openingFacts(ctx, dsn, op.code)
		if err != nil {
			res.inv.problems = append(res.inv.problems, "opening facts: "+err.Error())
		} else if before > 0 {
			res.inv.problems = append(res.inv.problems, fmt.Sprintf("%d wallet rows issued before opensAt", before))
		}
		res.inv.ok = len(res.inv.problems) == 0
		res.open = openingOf(wl, res, before, last)
	}
	if wl.barrier {
		var first, last int64 = -1, 0
		for _, s := range res.load.samples {
			if s.sent && s.status != 0 {
				if first < 0 || s.sendNs < first {
					first = s.sendNs
				}
				last = max(last, s.sendNs)
			}
		}
		res.notes = append(res.notes, fmt.Sprintf("the %s requests were written within %s ms of each other (first to last send)",
			thousands(len(wl.reqs)), fmtMs(time.Duration(last-first))))
	}
	return res, nil
}

// nginxErrors summarizes the error-level lines of nginx's error log ("" when none): how many,
// and the first.
func nginxErrors(log string) string {
	var n int
	var first string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "[error]") || strings.Contains(line, "[crit]") || strings.Contains(line, "[alert]") {
			if n == 0 {
				first = line
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("nginx logged %d errors, the first: `%s`", n, first)
}

// adminToken is the instances' ADMIN_TOKEN in the runs that use the admin API (W6).
const adminToken = "bench-admin-token-bench-admin-token"

// createOpeningCoupon creates W6's coupon through couponsvc's admin API at base.
func createOpeningCoupon(ctx context.Context, base string, op *opening) error {
	body, _ := json.Marshal(map[string]any{"code": op.code, "name": "bench opening " + op.code, "discountAmount": 100,
		"totalQuantity": op.stock, "opensAt": op.opensAt.UTC().Format(time.RFC3339Nano)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/admin/coupons", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("create coupon %s through the admin API: %w", op.code, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("create coupon %s through the admin API: %d %s", op.code, resp.StatusCode, b)
	}
	if time.Until(op.opensAt) < op.early {
		return fmt.Errorf("creating coupon %s took until %v before its opening, less than the %v the clients start before it",
			op.code, time.Until(op.opensAt).Round(time.Millisecond), op.early)
	}
	return nil
}

// goroutinesOf is the instances' go_goroutines summed (-1 when one cannot be read).
func goroutinesOf(ctx context.Context, srvs []*server) int {
	sum := 0
	for _, s := range srvs {
		g := s.goroutines(ctx)
		if g < 0 {
			return -1
		}
		sum += g
	}
	return sum
}

// metricsOf is the instances' /metrics summed sample by sample (counters and histogram buckets
// add up; nil when one cannot be read).
func metricsOf(ctx context.Context, srvs []*server) promValues {
	sum := promValues{}
	for _, s := range srvs {
		m := s.metrics(ctx)
		if m == nil {
			return nil
		}
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum
}

// insideCouponsvc describes the run from couponsvc's own metrics: its batches (group commit),
// their transactions and lock grants, and how long requests waited for this process's CPUs
// after reaching the host; and, from pg_stat_statements, how much of a transaction was the
// statement's own time in PostgreSQL.
func insideCouponsvc(m promValues, instances int, inPG string) string {
	if m == nil {
		return "its /metrics could not be read"
	}
	ms := func(v float64) string { return fmtMs(time.Duration(v * float64(time.Second))) }
	who := "inside couponsvc"
	if instances > 1 {
		who = fmt.Sprintf("inside couponsvc (its %d instances' metrics summed)", instances)
	}
	return fmt.Sprintf(who+": %s batches of %.0f requests on average (p99 ≤ %.0f); "+
		"transaction mean %s ms (p99 ≤ %s)%s; lock grant held mean %s ms over %s grants; "+
		"arrival at the host to handling p50 ≤ %s ms, p99 ≤ %s ms",
		thousands(int(m["couponsvc_issue_batch_size_count"])), m.mean("couponsvc_issue_batch_size"),
		m.quantile("couponsvc_issue_batch_size", 0.99),
		ms(m.mean("couponsvc_issue_tx_seconds")), ms(m.quantile("couponsvc_issue_tx_seconds", 0.99)), inPG,
		ms(m.mean("couponsvc_lock_hold_seconds")), thousands(int(m["couponsvc_lock_hold_seconds_count"])),
		ms(m.quantile("couponsvc_issue_arrival_lag_seconds", 0.5)), ms(m.quantile("couponsvc_issue_arrival_lag_seconds", 0.99)))
}

// batchStatement is the mean time PostgreSQL spent executing couponsvc's batch statement in
// the run's database (pg_stat_statements), as ", of which ... in PostgreSQL", or "".
func batchStatement(ctx context.Context, dsn string) string {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return ""
	}
	defer conn.Close(ctx)
	var calls int64
	var mean float64
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return ""
	}
	err = conn.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time) / nullif(sum(calls), 0), 0)
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE '%WITH req AS%'`).Scan(&calls, &mean)
	if err != nil || calls == 0 {
		return ""
	}
	return fmt.Sprintf(", of which the statement ran %s ms in PostgreSQL (pg_stat_statements; the rest is the commit, the round trip and waiting for this process's CPUs)",
		fmtMs(time.Duration(mean*float64(time.Millisecond))))
}

// createCoupons inserts the workload's own coupons (the demo tiers are seeded by migrate).
func createCoupons(ctx context.Context, dsn string, coupons []couponDef) error {
	if len(coupons) == 0 {
		return nil
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, c := range coupons {
		if _, err := conn.Exec(ctx, `INSERT INTO coupon (id, code, name, discount_amount, total_quantity)
			VALUES (gen_random_uuid(), $1, $2, 100, $3)`, c.code, "bench "+c.code, c.stock); err != nil {
			return fmt.Errorf("create coupon %s: %w", c.code, err)
		}
	}
	return nil
}

// couponsvcBinary builds couponsvc from the repository root (or uses -couponsvc-bin).
func couponsvcBinary(ctx context.Context, o options, tmp string) (string, error) {
	if o.CouponsvcBin != "" {
		return o.CouponsvcBin, nil
	}
	dir := o.RepoDir
	if dir == "" {
		var err error
		if dir, err = repoRoot(); err != nil {
			return "", err
		}
	}
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	out := filepath.Join(tmp, "couponsvc")
	o.logf("building couponsvc in %s", dir)
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build couponsvc: %v\n%s", err, b)
	}
	return out, nil
}

func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("the go command is not on PATH (needed to build couponsvc; or pass -couponsvc-bin)")
}

// repoRoot finds the couponsvc module's directory: up from the working directory, else
// `go list -m`.
func repoRoot() (string, error) {
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && isCouponsvcModule(string(b)) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if goBin, err := goTool(); err == nil {
		cmd := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}")
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if out, err := cmd.Output(); err == nil {
			if d := strings.TrimSpace(string(out)); d != "" {
				return d, nil
			}
		}
	}
	return "", errors.New("cannot find the couponsvc module root (run from inside the repository or pass -couponsvc-bin)")
}

func isCouponsvcModule(gomod string) bool {
	for _, line := range strings.Split(gomod, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1] == "couponsvc"
		}
	}
	return false
}
