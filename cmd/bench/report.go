package main

import (
	"couponsvc/internal/stats"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// result is one design in one deployment on one workload.
type result struct {
	design           string
	deployment       deployment
	workload         *workload
	load             loadResult
	inv              invariants
	fcfs             []fcfs
	peakRSS          int64
	goroutinesBefore int
	goroutinesAfter  int
	notes            []string
	loadAvg          string       // the machine's 1-minute load average just before the run
	open             *openingFigs // W6 only
	cpuSeconds       float64      // the instances' CPU time during the load phase (NaN: unknown)
	dash             *dashLog     // couponsvc's /metrics scraped during the load (the dashboard's data)

	lats []int64 // sorted latencies of answered requests (lazily)
}

func (r *result) sent() int {
	n := 0
	for _, s := range r.load.samples {
		if s.sent {
			n++
		}
	}
	return n
}

func (r *result) count(f func(sample) bool) int {
	n := 0
	for _, s := range r.load.samples {
		if s.sent && f(s) {
			n++
		}
	}
	return n
}

func (r *result) status(code int) int {
	return r.count(func(s sample) bool { return s.status == code })
}

func (r *result) reqPerSec() float64 {
	if r.load.duration <= 0 {
		return 0
	}
	return float64(r.sent()) / r.load.duration.Seconds()
}

func (r *result) issuedPerSec() float64 {
	if r.load.duration <= 0 {
		return 0
	}
	return float64(r.status(201)) / r.load.duration.Seconds()
}

// pct is the q-quantile of the latencies of every sent request (transport errors included).
func (r *result) pct(q float64) time.Duration {
	if r.lats == nil {
		for _, s := range r.load.samples {
			if s.sent {
				r.lats = append(r.lats, s.latNs)
			}
		}
		sort.Slice(r.lats, func(i, j int) bool { return r.lats[i] < r.lats[j] })
	}
	return time.Duration(stats.Percentile(r.lats, q))
}

// byAnswer gives p50/p99 per HTTP status: where the tail comes from (the issued ones wait for a
// batch; the others are answered from memory).
func (r *result) byAnswer() string {
	lats := map[int][]int64{}
	for _, s := range r.load.samples {
		if s.sent {
			lats[s.status] = append(lats[s.status], s.latNs)
		}
	}
	codes := slices.Sorted(maps.Keys(lats))
	var parts []string
	for _, c := range codes {
		l := lats[c]
		slices.Sort(l)
		parts = append(parts, fmt.Sprintf("%d: p50 %s ms, p99 %s ms", c, fmtMs(time.Duration(stats.Percentile(l, 0.5))), fmtMs(time.Duration(stats.Percentile(l, 0.99)))))
	}
	return "latency by answer: " + strings.Join(parts, "; ")
}

// fiveXXWhileStock counts 5xx answers sent before the last 201 was sent (stock still remained).
func (r *result) fiveXXWhileStock() int {
	var last int64 = -1
	for _, s := range r.load.samples {
		if s.sent && s.status == 201 && s.sendNs > last {
			last = s.sendNs
		}
	}
	return r.count(func(s sample) bool { return s.status >= 500 && s.sendNs <= last })
}

func (r *result) invariantsText() string { return r.inv.String() }

func (r *result) fcfsText() string {
	if len(r.fcfs) == 0 {
		return "n/a"
	}
	if len(r.fcfs) == 1 && len(r.workload.stock) == 1 {
		return fmtPct(r.fcfs[0].precision)
	}
	if len(r.fcfs) > 4 { // W5: one figure over the coupons
		var sum float64
		for _, f := range r.fcfs {
			sum += f.precision
		}
		return fmt.Sprintf("min %s, mean %s over %d coupons", fmtPct(r.minFCFS()), fmtPct(sum/float64(len(r.fcfs))), len(r.fcfs))
	}
	parts := make([]string, len(r.fcfs))
	for i, f := range r.fcfs {
		parts[i] = f.code + " " + fmtPct(f.precision)
	}
	return strings.Join(parts, ", ")
}

// lateText is the fairness figure: the latest winner's first send after the boundary (the
// stock-th distinct asker's first send), in ms, the highest over the coupons with competition
// and winners ("n/a" when none).
func (r *result) lateText() string {
	var late time.Duration
	n := 0
	for _, f := range r.fcfs {
		if f.winners == 0 {
			continue
		}
		if n == 0 || f.late > late {
			late = f.late
		}
		n++
	}
	if n == 0 {
		return "n/a"
	}
	return signedMs(late)
}

// signedMs is fmtMs with a sign for negative durations.
func signedMs(d time.Duration) string {
	if d < 0 {
		return "-" + fmtMs(-d)
	}
	return fmtMs(d)
}

// stockText says how much of the stock was issued against what could be: per coupon, the stock
// or its distinct askers when fewer.
func (r *result) stockText() string {
	askers := map[string]map[uuid.UUID]bool{}
	for i, s := range r.load.samples {
		if s.sent {
			q := r.workload.reqs[i]
			if askers[q.code] == nil {
				askers[q.code] = map[uuid.UUID]bool{}
			}
			askers[q.code][q.user] = true
		}
	}
	var stock, could, short int
	for code, st := range r.workload.stock {
		stock += st
		could += min(st, len(askers[code]))
		if len(askers[code]) < st {
			short++
		}
	}
	issued := r.status(201)
	text := fmt.Sprintf("%s of the %s in stock issued", thousands(issued), thousands(stock))
	switch {
	case issued == stock:
		text += " (every coupon sold out)"
	case issued == could:
		text += fmt.Sprintf(" (all that could be: %d coupons had fewer distinct askers than stock)", short)
	default:
		text += fmt.Sprintf(" (NOT all: %s could have been)", thousands(could))
	}
	return text
}

// minFCFS is the lowest FCFS precision over the coupons with competition (-1 when none).
func (r *result) minFCFS() float64 {
	m := -1.0
	for _, f := range r.fcfs {
		if m < 0 || f.precision < m {
			m = f.precision
		}
	}
	return m
}

type machine struct {
	cpu, kernel, goVersion, postgres, redis, commit string
	cpus                                            int
	memMiB                                          int64
}

func describeMachine(o options) machine {
	m := machine{cpus: runtime.NumCPU(), goVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.Join(strings.Fields(v), " ")
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.memMiB = kb >> 10
	}
	m.redis = commandVersion("redis-server", "--version")
	dir := o.RepoDir
	if dir == "" {
		dir, _ = repoRoot()
	}
	if dir != "" {
		cmd := exec.Command("git", "describe", "--always", "--dirty")
		cmd.Dir = dir
		if out, err := cmd.Output(); err == nil {
			m.commit = strings.TrimSpace(string(out))
		}
	}
	return m
}

// loadAvg1 is the 1-minute load average ("?" when unknown).
func loadAvg1() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func commandVersion(bin string, arg string) string {
	out, err := exec.Command(bin, arg).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// report is the whole run.
type report struct {
	opts    options
	machine machine
	refs    []physRef
	results []*result
	skipped []string // design/workload pairs not run, and why
	elapsed time.Duration
	charts  []chart // written next to the report (-out), shown in it

	dashboards []chart // the dashboard's panels drawn from a workload's scrapes, next to the charts
}

func (rep *report) invariantsOK() bool {
	for _, r := range rep.results {
		if !r.inv.ok {
			return false
		}
	}
	return true
}

func (rep *report) find(design string, dep deployment, wl string) *result {
	for _, r := range rep.results {
		if r.design == design && r.deployment == dep && r.workload.name == wl {
			return r
		}
	}
	return nil
}

// deployments lists the deployments run, in order.
func (rep *report) deployments() []deployment {
	var out []deployment
	for _, r := range rep.results {
		if !slices.Contains(out, r.deployment) {
			out = append(out, r.deployment)
		}
	}
	return out
}

func (rep *report) markdown() string {
	var b strings.Builder
	m := rep.machine
	mode := "full"
	if rep.opts.Quick {
		mode = "quick (scaled-down sizes)"
	}
	fmt.Fprintf(&b, "## couponsvc benchmark (%s), %s\n\n", mode, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %s, %d CPUs, %s MiB RAM, Linux %s; %s; %s; %s; couponsvc %s. ", m.cpu, m.cpus,
		thousands(int(m.memMiB)), m.kernel, m.goVersion, m.postgres, firstWords(m.redis, 3), orDash(m.commit))
	fmt.Fprintf(&b, "PostgreSQL durability settings at their defaults: %v. Everything (load generator included) on this one machine, loopback only.\n\n", rep.opts.Durable)

	if len(rep.refs) > 0 {
		b.WriteString("### Physical references (same machine, same run)\n\n| reference | measured |\n| --- | --- |\n")
		for _, p := range rep.refs {
			fmt.Fprintf(&b, "| %s | %s |\n", p.name, p.value)
		}
		b.WriteString("\n")
	}

	b.WriteString("### Workloads\n\n")
	seen := map[string]bool{}
	for _, r := range rep.results {
		if !seen[r.workload.name] {
			seen[r.workload.name] = true
			fmt.Fprintf(&b, "- **%s** %s\n", r.workload.name, r.workload.title)
		}
	}
	b.WriteString("\nDesigns: **couponsvc** (this repository's binary, subprocesses, LOG_LEVEL=warn, other settings at their defaults; ADMIN_TOKEN set in W6; identity mode in W7); " +
		"**reference** (a Go port of the Spring + Redisson design: Gin, pgx pool defaults, redsync v4 mutex with default options over the same three Redis nodes; " +
		"every request takes the coupon's lock, then SELECT coupon, check stock, check wallet, INSERT, UPDATE in one transaction; " +
		refPoolText(rep.opts.RefRedisPool) + "). " +
		"Deployments: **direct** (one instance, the load generator connects to it); **K behind nginx** (K instances, every one on the same PostgreSQL and the same three Redis nodes, " +
		"behind one nginx configured like ingress-nginx's defaults: round robin, keep-alive to the instances (keepalive 320, keepalive_requests 10000, HTTP/1.1), " +
		"a request retried on another instance only when no connection could be made (proxy_next_upstream error timeout), worker_processes auto, no access log; " +
		"the load generator connects to nginx). " +
		"Each run: fresh database, empty Redis nodes, fresh server processes, connections opened before the clock starts. " +
		fmt.Sprintf("The load phase of one run is capped at %v (requests not sent by then would be reported).", rep.opts.Cap))
	for _, s := range rep.skipped {
		b.WriteString(" " + s + ".")
	}
	b.WriteString("\n\n")

	b.WriteString("### Results\n\n")
	b.WriteString("| design | deployment | workload | requests | req/s | issued/s | p50 ms | p95 ms | p99 ms | max ms | 201 | 409 | 410 | 429 | 503 (LOCK_TIMEOUT) | other | transport errors | FCFS precision | latest winner after the boundary (ms) | peak RSS MiB | goroutines before → after | invariants |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |\n")
	for _, r := range rep.results {
		sent := r.sent()
		other := r.count(func(s sample) bool {
			switch s.status {
			case 0, 201, 409, 410, 429, 503:
				return false
			}
			return true
		})
		reqs := thousands(sent)
		if r.load.notSent > 0 {
			reqs = fmt.Sprintf("%s of %s (capped)", thousands(sent), thousands(len(r.load.samples)))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %.0f | %s → %s | %s |\n",
			r.design, r.deployment, r.workload.name, reqs, thousands(int(r.reqPerSec()+0.5)), thousands(int(r.issuedPerSec()+0.5)),
			fmtMs(r.pct(0.50)), fmtMs(r.pct(0.95)), fmtMs(r.pct(0.99)), fmtMs(r.pct(1)),
			thousands(r.status(201)), thousands(r.status(409)), thousands(r.status(410)), thousands(r.status(429)),
			thousands(r.status(503)), thousands(r.count(func(s sample) bool { return s.status == 503 && s.errCode == "LOCK_TIMEOUT" })),
			thousands(other), thousands(r.count(func(s sample) bool { return s.status == 0 })),
			r.fcfsText(), r.lateText(), float64(r.peakRSS)/(1<<20), fmtCount(r.goroutinesBefore), fmtCount(r.goroutinesAfter), r.invariantsText())
	}
	b.WriteString("\nreq/s = answered requests / (first send → last answer); issued/s = 201s over the same time. " +
		"FCFS precision: per coupon with more distinct askers than stock, the share of winners among the first `stock` distinct users by send time " +
		"(W5: the lowest and the mean over its coupons; W6: only requests sent at or after the opening count). " +
		"Latest winner after the boundary: per such coupon, order the distinct users by their first send; the boundary is the first send of the `stock`-th of them; " +
		"the figure is the latest first send of any winner minus the boundary, in ms, the highest over the coupons " +
		"(0 when the winners are exactly the first `stock` users; it says how much later than the last rightful winner a request could still win). " +
		"Peak RSS: the highest of the instances. Goroutines from /metrics go_goroutines, summed over the instances: before the load (no client connected) and " +
		fmt.Sprintf("%v after it (the load's connections and nginx closed). ", rep.opts.Settle) +
		"Invariants checked in PostgreSQL afterwards: issued_quantity = wallet rows ≤ total for every coupon, one row per (coupon, user), every 201 has its row (same id, coupon, user), no row without a 201; " +
		"W6 also: no wallet row issued before opensAt.\n")
	var loads []string
	for _, r := range rep.results {
		loads = append(loads, fmt.Sprintf("%s (%s) %s %s", r.design, r.deployment, r.workload.name, r.loadAvg))
	}
	if len(loads) > 0 {
		fmt.Fprintf(&b, "\nThe machine's 1-minute load average just before each run (other work on the machine skews the figures): %s.\n", strings.Join(loads, ", "))
	}
	for _, r := range rep.results {
		who := fmt.Sprintf("%s (%s) on %s", r.design, r.deployment, r.workload.name)
		if r.load.capped || r.load.notSent > 0 {
			fmt.Fprintf(&b, "\n- %s was capped at %v of load: %s of %s requests were not sent.", who,
				rep.opts.Cap, thousands(r.load.notSent), thousands(len(r.load.samples)))
		}
		notes := r.notes
		if len(r.workload.stock) > 1 && r.workload.opening == nil {
			notes = append(notes, r.stockText())
		}
		if c := r.cpuPerRequest(); c >= 0 {
			notes = append(notes, fmt.Sprintf("CPU of the instances during the load: %s µs per request (process_cpu_seconds_total)", fmtMicros(c)))
		}
		for _, n := range append(notes, r.byAnswer()) {
			fmt.Fprintf(&b, "\n- %s: %s", who, n)
		}
		if !r.inv.ok {
			fmt.Fprintf(&b, "\n- %s: invariants %s", who, r.inv)
		}
	}
	b.WriteString("\n")

	if t := rep.openingTable(); t != "" {
		b.WriteString("\n### The opening moment (W6)\n\n")
		b.WriteString(t)
	}
	if t := rep.identityTable(); t != "" {
		b.WriteString("\n### Identity mode: what verifying tokens costs (W7 vs W1, same run)\n\n")
		b.WriteString(t)
	}
	for _, dep := range rep.deployments() {
		if t := rep.targets(dep); t != "" {
			fmt.Fprintf(&b, "\n### Targets, %s (couponsvc vs reference, same run)\n\n", dep)
			b.WriteString(t)
		}
	}
	if c := chartsMarkdown(rep.charts); c != "" {
		b.WriteString("\n" + c)
	}
	if c := dashboardsMarkdown(rep.dashboards); c != "" {
		b.WriteString("\n" + c)
	}
	fmt.Fprintf(&b, "\nWhole run: %s.\n", rep.elapsed.Round(time.Second))
	return b.String()
}

// targets renders the second table: couponsvc/reference ratios and the absolute targets.
func (rep *report) targets(dep deployment) string {
	type row struct {
		metric, cs, ref, ratio, target, verdict string
	}
	var rows []row
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	ratioRow := func(wl, what string, get func(*result) float64) {
		c, r := rep.find(designCouponsvc, dep, wl), rep.find(designReference, dep, wl)
		if c == nil {
			return
		}
		x := row{metric: wl + " " + what, cs: thousands(int(get(c) + 0.5)), ref: "—", ratio: "—", target: "≥ 10x reference", verdict: "n/a (no reference run)"}
		if r != nil && get(r) > 0 {
			q := get(c) / get(r)
			x.ref, x.ratio, x.verdict = thousands(int(get(r)+0.5)), fmt.Sprintf("%.1fx", q), verdict(q >= 10)
		}
		rows = append(rows, x)
	}
	p99Row := func(wl string, limit time.Duration) {
		c, r := rep.find(designCouponsvc, dep, wl), rep.find(designReference, dep, wl)
		if c == nil {
			return
		}
		x := row{metric: wl + " p99 latency (ms)", cs: fmtMs(c.pct(0.99)), ref: "—", ratio: "—",
			target: fmt.Sprintf("< %d ms", limit.Milliseconds()), verdict: verdict(c.pct(0.99) < limit)}
		if r != nil {
			x.ref = fmtMs(r.pct(0.99))
			if r.pct(0.99) > 0 {
				x.ratio = fmt.Sprintf("%.3fx", float64(c.pct(0.99))/float64(r.pct(0.99)))
			}
		}
		rows = append(rows, x)
	}
	countRow := func(wl, what string, get func(*result) int) {
		c, r := rep.find(designCouponsvc, dep, wl), rep.find(designReference, dep, wl)
		if c == nil {
			return
		}
		x := row{metric: wl + " " + what, cs: thousands(get(c)), ref: "—", ratio: "—", target: "0", verdict: verdict(get(c) == 0)}
		if r != nil {
			x.ref = thousands(get(r))
		}
		rows = append(rows, x)
	}
	perSec := func(r *result) float64 { return r.reqPerSec() }
	issued := func(r *result) float64 { return r.issuedPerSec() }

	ratioRow("W4", "issued/s (hot coupon issuance)", issued)
	p99Row("W4", 100*time.Millisecond)
	countRow("W4", "5xx while stock remains", (*result).fiveXXWhileStock)
	ratioRow("W2", "issued/s (hot coupon issuance)", issued)
	p99Row("W2", 150*time.Millisecond)
	ratioRow("W1", "req/s (sold-out crowd)", perSec)
	p99Row("W1", 25*time.Millisecond)
	ratioRow("W3", "req/s (mixed tiers with retries)", perSec)
	p99Row("W3", 50*time.Millisecond)
	countRow("W3", "503 LOCK_TIMEOUT", func(r *result) int {
		return r.count(func(s sample) bool { return s.status == 503 && s.errCode == "LOCK_TIMEOUT" })
	})
	for _, wl := range []string{"W1", "W2", "W3", "W4"} {
		c, r := rep.find(designCouponsvc, dep, wl), rep.find(designReference, dep, wl)
		if c == nil || c.minFCFS() < 0 {
			continue
		}
		x := row{metric: wl + " FCFS precision", cs: c.fcfsText(), ref: "—", ratio: "—", target: "≥ 99%", verdict: verdict(c.minFCFS() >= 0.99)}
		if r != nil {
			x.ref = r.fcfsText()
		}
		rows = append(rows, x)
	}
	if c := rep.find(designCouponsvc, dep, "W3"); c != nil {
		x := row{metric: "W3 peak RSS (MiB)", cs: fmt.Sprintf("%.0f", float64(c.peakRSS)/(1<<20)), ref: "—", ratio: "—",
			target: "< 256 MiB", verdict: verdict(c.peakRSS < 256<<20)}
		if r := rep.find(designReference, dep, "W3"); r != nil {
			x.ref = fmt.Sprintf("%.0f", float64(r.peakRSS)/(1<<20))
			if r.peakRSS > 0 {
				x.ratio = fmt.Sprintf("%.1fx", float64(c.peakRSS)/float64(r.peakRSS))
			}
		}
		rows = append(rows, x)
	}
	for _, wl := range []string{"W1", "W2", "W3", "W4"} {
		c := rep.find(designCouponsvc, dep, wl)
		if c == nil {
			continue
		}
		ok := c.goroutinesBefore >= 0 && c.goroutinesAfter >= 0 && c.goroutinesAfter <= c.goroutinesBefore+goroutineSlack
		x := row{metric: wl + " goroutines before → after", cs: fmt.Sprintf("%s → %s", fmtCount(c.goroutinesBefore), fmtCount(c.goroutinesAfter)),
			ref: "—", ratio: "—", target: fmt.Sprintf("back to idle (± %d)", goroutineSlack), verdict: verdict(ok)}
		if r := rep.find(designReference, dep, wl); r != nil {
			x.ref = fmt.Sprintf("%s → %s", fmtCount(r.goroutinesBefore), fmtCount(r.goroutinesAfter))
		}
		rows = append(rows, x)
	}
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("| target | couponsvc | reference | couponsvc / reference | target | verdict |\n| --- | ---: | ---: | ---: | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.metric, r.cs, r.ref, r.ratio, r.target, r.verdict)
	}
	return b.String()
}

func refPoolText(n int) string {
	if n > 0 {
		return fmt.Sprintf("go-redis pool of %d connections per node", n)
	}
	return fmt.Sprintf("go-redis default pool, %d connections per node", 10*runtime.GOMAXPROCS(0))
}

// goroutineSlack is how far above its idle count the service may be after a workload and still
// count as back to idle (a timer or a pool's background goroutine).
const goroutineSlack = 5

func fmtMs(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f", ms)
	default:
		return thousands(int(ms + 0.5))
	}
}

func fmtPct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

func fmtCount(n int) string {
	if n < 0 {
		return "?"
	}
	return thousands(n)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
	}
	return strings.Join(f, " ")
}

// thousands formats n with comma separators.
func thousands(n int) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// openingFigs are W6's figures.
type openingFigs struct {
	stock         int
	issuedBefore  int           // wallet rows issued before opensAt (PostgreSQL; must be 0)
	sentBefore    int           // requests sent before the opening (answered EVENT_NOT_OPEN)
	wonSentBefore int           // answers 201 to requests sent before the opening (arrived after it)
	earliestWin   time.Duration // the earliest send of a 201 relative to the opening (< 0: before it)
	soldOut       bool          // the whole stock was issued
	sellOut       time.Duration // the opening → the answer of the last 201 (load generator's clock)
	lastInPG      time.Duration // opensAt → the last wallet row's issued_at (PostgreSQL's clock)
	fcfs          *fcfs         // the coupon's FCFS figures over the senders at or after the opening
}

// openingOf computes W6's figures of a run.
func openingOf(wl *workload, r *result, issuedBefore int, lastInPG time.Duration) *openingFigs {
	op := wl.opening
	f := &openingFigs{stock: op.stock, issuedBefore: issuedBefore, lastInPG: lastInPG}
	var lastWin int64 = -1
	var firstWin int64 = math.MaxInt64
	for _, s := range r.load.samples {
		if !s.sent {
			continue
		}
		if s.status == 201 {
			firstWin = min(firstWin, s.sendNs)
		}
		if s.sendNs < wl.eligibleNs {
			f.sentBefore++
			if s.status == 201 {
				f.wonSentBefore++
			}
		}
		if s.status == 201 {
			lastWin = max(lastWin, s.endNs)
		}
	}
	f.soldOut = r.status(201) == op.stock
	if lastWin >= 0 {
		f.sellOut = time.Duration(lastWin - wl.eligibleNs)
		f.earliestWin = time.Duration(firstWin - wl.eligibleNs)
	}
	for i := range r.fcfs {
		if r.fcfs[i].code == op.code {
			f.fcfs = &r.fcfs[i]
		}
	}
	return f
}

// openingTable renders W6's figures, one row per run.
func (rep *report) openingTable() string {
	var b strings.Builder
	for _, r := range rep.results {
		f := r.open
		if f == nil {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("| design | deployment | issued before opening | requests sent before opening (201 among them) | earliest winner's send vs opening (ms) | opening → sold out (ms) | " +
				"latest winner's send after the stock-th sender at/after opening (ms) | winners among the first `stock` senders at/after opening |\n" +
				"| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |\n")
		}
		sell := "NOT sold out"
		if f.soldOut {
			sell = fmt.Sprintf("%s (last issued_at %s after opensAt in PostgreSQL)", fmtMs(f.sellOut), fmtMs(f.lastInPG))
		}
		late, share := "n/a", "n/a"
		if f.fcfs != nil {
			late = r.lateText()
			share = fmt.Sprintf("%d of %d (%s)", f.fcfs.earlyWon, f.fcfs.early, fmtPct(float64(f.fcfs.earlyWon)/float64(f.fcfs.early)))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s (%s) | %s | %s | %s | %s |\n", r.design, r.deployment, thousands(f.issuedBefore),
			thousands(f.sentBefore), thousands(f.wonSentBefore), signedMs(f.earliestWin), sell, late, share)
	}
	if b.Len() == 0 {
		return ""
	}
	b.WriteString("\nIssued before opening: wallet rows whose issued_at (PostgreSQL's clock) is before the coupon's opensAt; it must be 0. " +
		"A request sent before the opening may be handled after it and win: those are counted apart, and the earliest winner's send says how long before the opening one was sent (negative: before). " +
		"Opening → sold out: from opensAt to the answer of the last 201, on the load generator's clock (same machine, same wall clock). " +
		"The last two columns count only requests sent at or after the opening (every one a fresh user): the `stock`-th of them is the boundary.\n")
	return b.String()
}
