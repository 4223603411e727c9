package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// histogram_quantile against values computed by hand, as Prometheus computes them.
func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(+1)
	// 10 observations: 2 in (0, 1], 6 in (1, 2], 1 in (2, 4], 1 above 4.
	b := map[float64]float64{1: 2, 2: 8, 4: 9, inf: 10}
	for _, c := range []struct {
		q, want float64
	}{
		{0, 0},             // rank 0: the start of the first bucket
		{0.1, 0.5},         // rank 1 of the first bucket's 2: halfway from 0 to 1
		{0.2, 1},           // rank 2: the first bucket's end
		{0.5, 1.5},         // rank 5: 3 of the second bucket's 6, from 1 to 2
		{0.8, 2},           // rank 8: the second bucket's end
		{0.85, 3},          // rank 8.5: half of the third bucket's one, from 2 to 4
		{0.95, 4},          // rank 9.5: in the +Inf bucket: the highest finite bound
		{1, 4},             // likewise
		{-0.1, -inf},       // as PromQL
		{1.1, inf},         // as PromQL
		{0.25, 1 + 1.0/12}, // rank 2.5: 0.5 of the second bucket's 6
	} {
		if got := histogramQuantile(c.q, b); math.Abs(got-c.want) > 1e-12 && got != c.want {
			t.Errorf("q=%v: %v, want %v", c.q, got, c.want)
		}
	}
	if got := histogramQuantile(0.5, map[float64]float64{1: 0, inf: 0}); !math.IsNaN(got) {
		t.Errorf("no observations: %v, want NaN", got)
	}
	if got := histogramQuantile(0.5, map[float64]float64{1: 3, 2: 5}); !math.IsNaN(got) {
		t.Errorf("no +Inf bucket: %v, want NaN", got)
	}
	// Non-monotonic counts (a scrape racing an observation) are made monotonic: 1: 4, 2: 3
	// counts as 2: 4, so the median is in the first bucket.
	if got := histogramQuantile(0.5, map[float64]float64{1: 4, 2: 3, inf: 4}); got != 0.5 {
		t.Errorf("non-monotonic: %v, want 0.5", got)
	}
}

// The rates and quantiles of the panels over hand-made scrapes of two pods.
func TestDashQuery(t *testing.T) {
	log := &dashLog{labels: map[string]map[string]string{}, interval: dashScrapeEvery}
	key := func(l map[string]string) string {
		k := seriesKey(l)
		log.labels[k] = l
		return k
	}
	issued := func(pod string) string {
		return key(map[string]string{"__name__": "couponsvc_issue_total", "pod": pod, "coupon": "C", "result": "issued"})
	}
	bucket := func(le string) string {
		return key(map[string]string{"__name__": "couponsvc_issue_tx_seconds_bucket", "pod": "p0", "le": le})
	}
	log.scrapes = []dashScrape{
		{at: -0.1, values: map[string]float64{bucket("0.001"): 0, bucket("0.002"): 0, bucket("+Inf"): 0}},
		// p0's counter appears: counted from 0.
		{at: 0.4, values: map[string]float64{issued("p0"): 10, bucket("0.001"): 5, bucket("0.002"): 10, bucket("+Inf"): 10}},
		// p1's appears, p0's restarts (a reset: counted from 0 again).
		{at: 0.9, values: map[string]float64{issued("p0"): 5, issued("p1"): 20, bucket("0.001"): 5, bucket("0.002"): 10, bucket("+Inf"): 10}},
	}
	d := &dashQuery{log: log, read: map[string]bool{}}
	byPod := d.rate("couponsvc_issue_total", labelIs("result", "issued"), "pod")
	if got := byPod["p0"]; len(got) != 2 || got[0].Y != 20 || got[1].Y != 10 {
		t.Errorf("p0: %v, want 20/s then 10/s", got)
	}
	if got := byPod["p1"]; len(got) != 1 || got[0].Y != 40 || got[0].X != 0.9 {
		t.Errorf("p1: %v, want 40/s at 0.9", got)
	}
	if got := d.rate("couponsvc_issue_total", labelIs("result", "sold_out"), "pod"); len(got) != 0 {
		t.Errorf("no sold_out series: %v", got)
	}
	// 5 in (0, 1 ms], 5 in (1, 2 ms]: p50 at the first bucket's end, p75 halfway in the second;
	// the second interval has no observation: no point.
	if got := d.quantile(0.75, "couponsvc_issue_tx_seconds", nil, 1e3)[""]; len(got) != 1 || math.Abs(got[0].Y-1.5) > 1e-9 {
		t.Errorf("p75: %v, want one point at 1.5 ms", got)
	}
	if !d.read["couponsvc_issue_total"] || !d.read["couponsvc_issue_tx_seconds_bucket"] {
		t.Errorf("read %v", d.read)
	}
}

// dashboardJSONTitles are the titles of the panels of k8s/monitoring/dashboard.json (its
// rows' titles apart).
func dashboardJSONTitles(t *testing.T) (panels, rows []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "k8s", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Type, Title string
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Panels {
		if p.Type == "row" {
			rows = append(rows, p.Title)
		} else {
			panels = append(panels, p.Title)
		}
	}
	return panels, rows
}

// checkDashPanels compares the drawn panels' titles (and rows) with dashboard.json's: a panel
// renamed, added or removed there fails until the picture follows.
func checkDashPanels(t *testing.T) {
	t.Helper()
	wantPanels, wantRows := dashboardJSONTitles(t)
	var panels, rows []string
	for _, p := range dashPanels {
		panels = append(panels, p.title)
		if !slices.Contains(rows, p.row) {
			rows = append(rows, p.row)
		}
	}
	if !slices.Equal(panels, wantPanels) {
		t.Errorf("drawn panels %q,\ndashboard.json's %q", panels, wantPanels)
	}
	if !slices.Equal(rows, wantRows) {
		t.Errorf("drawn rows %q, dashboard.json's %q", rows, wantRows)
	}
}

func TestDashPanelsAreTheDashboards(t *testing.T) { checkDashPanels(t) }

// The quick bench of couponsvc on W4 with two instances behind nginx, scraping their /metrics
// during the load: the dashboard PNG decodes, its panels are dashboard.json's, every metric it
// reads was in the scrapes, and the issued-per-second panel integrates to the coupons issued.
func TestQuickBenchDashboard(t *testing.T) {
	checkDashPanels(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dep, err := parseDeployment("nginx-N", 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	extra := filepath.Join(dir, "docs", "dashboard.png")
	var out bytes.Buffer
	rep, err := run(ctx, options{
		Workloads: []string{"W4"}, Designs: []string{designCouponsvc}, Deployments: []deployment{dep},
		Quick: true, Durable: false, Cap: 30 * time.Second, Settle: 500 * time.Millisecond, Log: testLog{t},
		CouponsvcBin: testBinary(t), Out: filepath.Join(dir, "RESULTS.md"), Dashboard: extra, DashWorkload: "W4",
	}, &out)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	r := rep.find(designCouponsvc, dep, "W4")
	if r == nil || r.dash == nil {
		t.Fatal("no W4 run with scrapes")
	}
	log := r.dash
	if n := len(log.scrapes); n < 3 {
		t.Fatalf("%d scrapes, want the one before, some during and the one after the load", n)
	}
	if first, last := log.scrapes[0].at, log.scrapes[len(log.scrapes)-1].at; first > 0 || last < r.load.duration.Seconds() {
		t.Errorf("scrapes from %.3f s to %.3f s, want from before the load to after its %v", first, last, r.load.duration)
	}
	for _, s := range log.scrapes {
		if s.missed > 0 { // carried over, the sums still add up; a busy machine may time one out
			t.Logf("scrape at %.3f s: %d instances not read", s.at, s.missed)
		}
	}

	for _, path := range []string{extra, filepath.Join(dir, chartsDir, "dashboard-W4-nginx-2.png")} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 1200 {
			t.Errorf("%s: %v, want a 2-column grid of 12 panels", path, b)
		}
	}
	if md := out.String(); !strings.Contains(md, "### The dashboard") || !strings.Contains(md, "charts/dashboard-W4-nginx-2.png") {
		t.Errorf("the report does not show the dashboard")
	}

	// Every metric the panels read was in the scrapes.
	read, err := renderDashboard(log, "test", filepath.Join(dir, "again.png"))
	if err != nil {
		t.Fatal(err)
	}
	scraped := map[string]bool{}
	for _, l := range log.labels {
		scraped[l["__name__"]] = true
	}
	var names []string
	for name := range read {
		names = append(names, name)
		if !scraped[name] {
			t.Errorf("the dashboard reads %s, not in the scrapes", name)
		}
	}
	slices.Sort(names)
	t.Logf("read %d metrics: %s", len(names), strings.Join(names, ", "))
	if len(names) < 10 {
		t.Errorf("read %d metric names, want every panel's", len(names))
	}

	// The issued-per-second panel integrates to the coupons issued (201 answers): each point
	// is an interval's increase over its length.
	d := &dashQuery{log: log, read: map[string]bool{}}
	var integral, peak float64
	for _, xys := range d.rate("couponsvc_issue_total", labelIs("result", "issued"), "coupon") {
		prev := log.scrapes[0].at
		for _, p := range xys {
			// the point's interval is from the scrape before it
			i := slices.IndexFunc(log.scrapes, func(s dashScrape) bool { return s.at == p.X })
			if i > 0 {
				prev = log.scrapes[i-1].at
			}
			integral += p.Y * (p.X - prev)
			peak = max(peak, p.Y)
		}
	}
	issued := float64(r.status(201))
	if tol := peak * log.interval.Seconds(); issued == 0 || math.Abs(integral-issued) > tol {
		t.Errorf("issued/s integrates to %.1f, %v coupons issued (201 answers); tolerance %.1f", integral, issued, tol)
	}
	t.Logf("issued/s integrates to %.2f over %d scrapes; %v answers 201; peak %.0f/s", integral, len(log.scrapes), issued, peak)
}
