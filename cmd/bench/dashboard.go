package main

// The Grafana dashboard of k8s/monitoring/dashboard.json, drawn from a bench run: Grafana is
// not installable where the bench runs, so while a workload's load runs the bench scrapes every
// couponsvc instance's /metrics as Prometheus would (every dashScrapeEvery, and once before and
// once after the load), and renders the dashboard's panels from those scrapes, each computed the
// way its PromQL computes it (rate over the scrape interval, histogram_quantile over the
// buckets' increase, sums by the panel's labels), with the instances labelled pod as a
// ServiceMonitor labels them.

import (
	"cmp"
	"context"
	"fmt"
	"image/color"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// dashScrapeEvery is the scrape interval: short, so that a quick run's second or two of load
// still gives a line, and the rate of a panel is over one interval (Grafana's $__rate_interval
// over a Prometheus scraping every 15 s would smooth the same counters over a minute).
const dashScrapeEvery = 250 * time.Millisecond

// dashMaxScrapes bounds the scrapes kept of one run: when a run outlasts them, every other
// scrape is dropped and the interval doubles (a 90 s load at 250 ms is 360 scrapes).
const dashMaxScrapes = 1200

// dashWorkload is the workload whose dashboard the bench draws unless told otherwise: W4, a
// hot coupon with more demand than its stock, shows an event's whole story in one coupon: the
// issuing, the stock running out, the answers turning to sold_out.
const dashWorkload = "W4"

// dashScrape is one scrape of every instance.
type dashScrape struct {
	when   time.Time
	at     float64            // seconds since the load started (negative: before)
	values map[string]float64 // series key -> value, every instance's couponsvc_* series
	missed int                // instances that could not be read (their previous values are kept)
}

// dashLog is the scrapes of one run.
type dashLog struct {
	pods     []string                     // the instances' pod labels, in the order of the servers
	labels   map[string]map[string]string // series key -> its labels, with __name__ and pod
	scrapes  []dashScrape
	interval time.Duration // the interval between the kept scrapes (doubled when thinned)
}

// seriesKey is the canonical key of a series: its name and sorted labels.
func seriesKey(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		if k != model.MetricNameLabel {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(labels[model.MetricNameLabel])
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

// parseScrape reads a /metrics page (Prometheus text format) into flat samples as Prometheus
// stores them (a histogram as its _bucket series, le="+Inf" included, _sum and _count), each
// labelled pod. Only couponsvc's own families are kept.
func parseScrape(r io.Reader, pod string) ([]map[string]string, []float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, nil, err
	}
	var labels []map[string]string
	var values []float64
	add := func(name string, base map[string]string, v float64, extra ...string) {
		l := make(map[string]string, len(base)+2)
		for k, x := range base {
			l[k] = x
		}
		l[model.MetricNameLabel] = name
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		labels, values = append(labels, l), append(values, v)
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "couponsvc_") {
			continue
		}
		for _, m := range f.GetMetric() {
			base := map[string]string{"pod": pod}
			for _, lp := range m.GetLabel() {
				base[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), +1) {
						continue // written below from the count
					}
					add(name+"_bucket", base, float64(b.GetCumulativeCount()), "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))
				}
				add(name+"_bucket", base, float64(h.GetSampleCount()), "le", "+Inf")
				add(name+"_sum", base, h.GetSampleSum())
				add(name+"_count", base, float64(h.GetSampleCount()))
			case m.GetCounter() != nil:
				add(name, base, m.GetCounter().GetValue())
			case m.GetGauge() != nil:
				add(name, base, m.GetGauge().GetValue())
			case m.GetUntyped() != nil:
				add(name, base, m.GetUntyped().GetValue())
			}
		}
	}
	return labels, values, nil
}

// dashScraper scrapes a run's instances in the background.
type dashScraper struct {
	srvs   []*server
	client *http.Client
	log    *dashLog
	mu     sync.Mutex // guards log.scrapes
	stop   chan struct{}
	halted sync.Once
	done   chan struct{}
	last   map[string][]string // pod -> its series keys of the previous scrape (kept when it cannot be read)
}

// startDashScraper scrapes the instances once (before the load) and then every
// dashScrapeEvery until finish.
func startDashScraper(ctx context.Context, srvs []*server) *dashScraper {
	s := &dashScraper{srvs: srvs, stop: make(chan struct{}), done: make(chan struct{}), last: map[string][]string{},
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
		log:    &dashLog{labels: map[string]map[string]string{}, interval: dashScrapeEvery}}
	for i := range srvs {
		s.log.pods = append(s.log.pods, fmt.Sprintf("couponsvc-%d", i))
	}
	s.scrape(ctx)
	go func() {
		defer close(s.done)
		t := time.NewTicker(dashScrapeEvery)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-s.stop:
				return
			case <-t.C:
			}
			// Thinned: the interval doubled, so every other tick is skipped.
			s.mu.Lock()
			every := int(s.log.interval / dashScrapeEvery)
			s.mu.Unlock()
			if n%every == 0 {
				s.scrape(ctx)
			}
		}
	}()
	return s
}

// finish stops the background scrapes, scrapes once more (after the load) and returns the
// scrapes with their times relative to start, the load's start.
func (s *dashScraper) finish(ctx context.Context, start time.Time) *dashLog {
	s.halt()
	s.scrape(ctx)
	s.client.CloseIdleConnections()
	for i := range s.log.scrapes {
		s.log.scrapes[i].at = s.log.scrapes[i].when.Sub(start).Seconds()
	}
	return s.log
}

// halt stops the background scrapes (a run that fails before finish); it can be called again.
func (s *dashScraper) halt() {
	s.halted.Do(func() { close(s.stop) })
	<-s.done
}

// scrape reads every instance's /metrics at once and appends the scrape.
func (s *dashScraper) scrape(ctx context.Context) {
	when := time.Now()
	type page struct {
		labels []map[string]string
		values []float64
		err    error
	}
	pages := make([]page, len(s.srvs))
	var wg sync.WaitGroup
	for i, srv := range s.srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.base+"/metrics", nil)
			if err != nil {
				pages[i].err = err
				return
			}
			resp, err := s.client.Do(req)
			if err != nil {
				pages[i].err = err
				return
			}
			defer resp.Body.Close()
			pages[i].labels, pages[i].values, pages[i].err = parseScrape(resp.Body, s.log.pods[i])
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := dashScrape{when: when, values: map[string]float64{}}
	var prev map[string]float64
	if n := len(s.log.scrapes); n > 0 {
		prev = s.log.scrapes[n-1].values
	}
	for i, p := range pages {
		pod := s.log.pods[i]
		if p.err != nil {
			// Counters carried over: what the instance counted meanwhile lands in the next
			// interval it is read in, and the sums still add up.
			sc.missed++
			for _, k := range s.last[pod] {
				sc.values[k] = prev[k]
			}
			continue
		}
		keys := make([]string, 0, len(p.labels))
		for j, l := range p.labels {
			k := seriesKey(l)
			if _, ok := s.log.labels[k]; !ok {
				s.log.labels[k] = l
			}
			sc.values[k] = p.values[j]
			keys = append(keys, k)
		}
		s.last[pod] = keys
	}
	s.log.scrapes = append(s.log.scrapes, sc)
	if len(s.log.scrapes) >= dashMaxScrapes {
		// Bounded: keep the first (before the load) and every other one after it.
		kept := s.log.scrapes[:1]
		for i := 2; i < len(s.log.scrapes); i += 2 {
			kept = append(kept, s.log.scrapes[i])
		}
		s.log.scrapes = kept
		s.log.interval *= 2
	}
}

// histogramQuantile is PromQL's histogram_quantile over buckets given as upper bound ->
// cumulative count (one of them +Inf): the bucket holding the rank q*count, linearly
// interpolated within it (from 0 for the first bucket when its bound is positive); the
// +Inf bucket answers the highest finite bound. NaN without observations or without the +Inf
// bucket.
func histogramQuantile(q float64, buckets map[float64]float64) float64 {
	switch {
	case math.IsNaN(q):
		return math.NaN()
	case q < 0:
		return math.Inf(-1)
	case q > 1:
		return math.Inf(+1)
	}
	bounds := make([]float64, 0, len(buckets))
	for le := range buckets {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) < 2 || !math.IsInf(bounds[len(bounds)-1], +1) {
		return math.NaN()
	}
	counts := make([]float64, len(bounds))
	for i, le := range bounds {
		counts[i] = buckets[le]
		if i > 0 && counts[i] < counts[i-1] { // as Prometheus: a non-monotonic scrape is made monotonic
			counts[i] = counts[i-1]
		}
	}
	total := counts[len(counts)-1]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	b := sort.SearchFloat64s(counts, rank)
	if b == len(bounds)-1 {
		return bounds[len(bounds)-2]
	}
	if b == 0 && bounds[0] <= 0 {
		return bounds[0]
	}
	start, end, count := 0.0, bounds[b], counts[b]
	if b > 0 {
		start = bounds[b-1]
		count -= counts[b-1]
		rank -= counts[b-1]
	}
	if count == 0 {
		return end
	}
	return start + (end-start)*(rank/count)
}

// dashQuery evaluates a panel's expressions over a run's scrapes, and records the metric
// names it reads.
type dashQuery struct {
	log  *dashLog
	read map[string]bool
}

// match selects series by their labels (nil: every series of the name).
type match func(l map[string]string) bool

// labelIs is label=value; labelRe is label=~re (anchored, as in PromQL).
func labelIs(name, value string) match {
	return func(l map[string]string) bool { return l[name] == value }
}

func labelRe(name, re string) match {
	rx := regexp.MustCompile("^(?:" + re + ")$")
	return func(l map[string]string) bool { return rx.MatchString(l[name]) }
}

func all(ms ...match) match {
	return func(l map[string]string) bool {
		for _, m := range ms {
			if !m(l) {
				return false
			}
		}
		return true
	}
}

// groupOf is the values of the by labels, joined by a space: the legend of Grafana's
// "{{a}} {{b}}".
func groupOf(l map[string]string, by []string) string {
	vs := make([]string, len(by))
	for i, b := range by {
		vs[i] = l[b]
	}
	return strings.Join(vs, " ")
}

// increase is, for the interval ending at scrape i, the increase of the name's series selected
// by m summed by key(labels): a counter absent from the previous scrape starts from 0, one that
// went down was reset.
func (d *dashQuery) increase(i int, name string, m match, key func(map[string]string) string) map[string]float64 {
	d.read[name] = true
	cur, prev := d.log.scrapes[i].values, d.log.scrapes[i-1].values
	out := map[string]float64{}
	for k, v := range cur {
		l := d.log.labels[k]
		if l[model.MetricNameLabel] != name || (m != nil && !m(l)) {
			continue
		}
		delta := v - prev[k]
		if delta < 0 {
			delta = v
		}
		out[key(l)] += delta
	}
	return out
}

// series is one line of a panel: legend -> points.
type series map[string]plotter.XYs

// rate is sum by (by) (rate(name{m}[interval])), one point per interval at its end.
func (d *dashQuery) rate(name string, m match, by ...string) series {
	out := series{}
	for i := 1; i < len(d.log.scrapes); i++ {
		dt := d.log.scrapes[i].at - d.log.scrapes[i-1].at
		for g, inc := range d.increase(i, name, m, func(l map[string]string) string { return groupOf(l, by) }) {
			out[g] = append(out[g], plotter.XY{X: d.log.scrapes[i].at, Y: inc / dt})
		}
	}
	return out
}

// gauge is agg by (by) (name{m}) at every scrape.
func (d *dashQuery) gauge(name string, m match, agg func(a, b float64) float64, by ...string) series {
	d.read[name] = true
	out := series{}
	for _, sc := range d.log.scrapes {
		vals := map[string]float64{}
		for k, v := range sc.values {
			l := d.log.labels[k]
			if l[model.MetricNameLabel] != name || (m != nil && !m(l)) {
				continue
			}
			g := groupOf(l, by)
			if old, ok := vals[g]; ok {
				v = agg(old, v)
			}
			vals[g] = v
		}
		for g, v := range vals {
			out[g] = append(out[g], plotter.XY{X: sc.at, Y: v})
		}
	}
	return out
}

// quantile is histogram_quantile(q, sum by (by, le) (rate(name_bucket{m}[interval]))), scaled
// by scale (seconds to ms); an interval without observations has no point.
func (d *dashQuery) quantile(q float64, name string, m match, scale float64, by ...string) series {
	out := series{}
	for i := 1; i < len(d.log.scrapes); i++ {
		inc := d.increase(i, name+"_bucket", m, func(l map[string]string) string { return groupOf(l, by) + "\xff" + l["le"] })
		groups := map[string]map[float64]float64{}
		for k, v := range inc {
			g, le, _ := strings.Cut(k, "\xff")
			f, err := strconv.ParseFloat(le, 64)
			if err != nil {
				continue
			}
			if groups[g] == nil {
				groups[g] = map[float64]float64{}
			}
			groups[g][f] += v
		}
		for g, bs := range groups {
			if v := histogramQuantile(q, bs); !math.IsNaN(v) && !math.IsInf(v, 0) {
				out[g] = append(out[g], plotter.XY{X: d.log.scrapes[i].at, Y: v * scale})
			}
		}
	}
	return out
}

// ratio is a / b point by point (the batch size's mean: rate(sum) / rate(count)); a point
// where b is 0 is left out, as PromQL's NaN draws nothing.
func ratio(a, b plotter.XYs) plotter.XYs {
	var out plotter.XYs
	for i := range min(len(a), len(b)) {
		if b[i].Y != 0 {
			out = append(out, plotter.XY{X: a[i].X, Y: a[i].Y / b[i].Y})
		}
	}
	return out
}

// dashLine is one drawn line of a panel.
type dashLine struct {
	legend string
	xys    plotter.XYs
}

// named gives a series' groups their legends: format with %s for the group (or the name alone
// for a series without by labels), sorted.
func named(s series, format string) []dashLine {
	var out []dashLine
	for g, xys := range s {
		legend := format
		if strings.Contains(format, "%s") {
			legend = strings.TrimSpace(fmt.Sprintf(format, g))
		}
		out = append(out, dashLine{legend, xys})
	}
	slices.SortFunc(out, func(a, b dashLine) int { return cmp.Compare(a.legend, b.legend) })
	return out
}

// dashPanel is a panel of the dashboard: its row, its title as in dashboard.json, the unit of
// its axis, and its lines computed as its PromQL computes them.
type dashPanel struct {
	row, title, unit string
	lines            func(d *dashQuery) []dashLine
}

const issueRoute = "/api/v1/coupons/:code/issue"

func minF(a, b float64) float64 { return math.Min(a, b) }
func sumF(a, b float64) float64 { return a + b }

// dashPanels are k8s/monitoring/dashboard.json's panels, in its order (a test compares the
// titles with the JSON's).
var dashPanels = []dashPanel{
	{"Event", "Issued per second, per coupon", "issued/s", func(d *dashQuery) []dashLine {
		return named(d.rate("couponsvc_issue_total", labelIs("result", "issued"), "coupon"), "%s")
	}},
	{"Event", "Remaining stock, per coupon", "coupons", func(d *dashQuery) []dashLine {
		return named(d.gauge("couponsvc_coupon_remaining", nil, minF, "coupon"), "%s")
	}},
	{"Event", "Answers per outcome", "answers/s", func(d *dashQuery) []dashLine {
		return append(named(d.rate("couponsvc_issue_total", nil, "result"), "%s"),
			named(d.rate("couponsvc_http_requests_total", all(labelIs("route", issueRoute), labelIs("status", "429"))), "429 too_many_requests")...)
	}},
	{"Event", "Failures per pod (503 and 5xx)", "answers/s", func(d *dashQuery) []dashLine {
		return append(named(d.rate("couponsvc_issue_total", labelRe("result", "lock_timeout|unavailable|outcome_unknown"), "pod", "result"), "%s"),
			named(d.rate("couponsvc_http_requests_total", labelRe("status", "5.."), "pod"), "%s 5xx")...)
	}},
	{"Latency", "Issue answer p50 / p99", "ms", func(d *dashQuery) []dashLine {
		route := labelIs("route", issueRoute)
		return slices.Concat(named(d.quantile(0.5, "couponsvc_http_request_duration_seconds", route, 1e3), "p50"),
			named(d.quantile(0.99, "couponsvc_http_request_duration_seconds", route, 1e3), "p99"),
			named(d.quantile(0.99, "couponsvc_http_request_duration_seconds", route, 1e3, "pod"), "p99 %s"))
	}},
	{"Latency", "Lock wait and hold", "ms", func(d *dashQuery) []dashLine {
		return slices.Concat(named(d.quantile(0.5, "couponsvc_lock_wait_seconds", nil, 1e3), "wait p50"),
			named(d.quantile(0.99, "couponsvc_lock_wait_seconds", nil, 1e3), "wait p99"),
			named(d.quantile(0.5, "couponsvc_lock_hold_seconds", nil, 1e3), "hold p50"),
			named(d.quantile(0.99, "couponsvc_lock_hold_seconds", nil, 1e3), "hold p99"))
	}},
	{"Latency", "Issue transaction", "ms", func(d *dashQuery) []dashLine {
		return slices.Concat(named(d.quantile(0.5, "couponsvc_issue_tx_seconds", nil, 1e3), "p50"),
			named(d.quantile(0.99, "couponsvc_issue_tx_seconds", nil, 1e3), "p99"))
	}},
	{"Latency", "Batch size", "requests", func(d *dashQuery) []dashLine {
		mean := ratio(d.rate("couponsvc_issue_batch_size_sum", nil)[""], d.rate("couponsvc_issue_batch_size_count", nil)[""])
		var out []dashLine
		if len(mean) > 0 {
			out = append(out, dashLine{"mean", mean})
		}
		return append(out, named(d.quantile(0.99, "couponsvc_issue_batch_size", nil, 1), "p99")...)
	}},
	{"Pods", "Arrival lag per pod (p99)", "ms", func(d *dashQuery) []dashLine {
		return named(d.quantile(0.99, "couponsvc_issue_arrival_lag_seconds", nil, 1e3, "pod"), "%s")
	}},
	{"Pods", "In-flight issue requests per pod", "requests", func(d *dashQuery) []dashLine {
		return named(d.gauge("couponsvc_issue_inflight", nil, sumF, "pod"), "%s")
	}},
	{"Pods", "Requests per second per pod", "requests/s", func(d *dashQuery) []dashLine {
		return named(d.rate("couponsvc_http_requests_total", labelIs("route", issueRoute), "pod"), "%s")
	}},
	{"Pods", "Issued per second per pod", "issued/s", func(d *dashQuery) []dashLine {
		return named(d.rate("couponsvc_issue_total", labelIs("result", "issued"), "pod"), "%s")
	}},
}

// dashPalette is Grafana's classic palette.
var dashPalette = []color.Color{
	color.RGBA{0x73, 0xbf, 0x69, 0xff}, color.RGBA{0xf2, 0xcc, 0x0c, 0xff}, color.RGBA{0x8a, 0xb8, 0xff, 0xff},
	color.RGBA{0xff, 0x78, 0x0a, 0xff}, color.RGBA{0xf2, 0x49, 0x5c, 0xff}, color.RGBA{0x57, 0x94, 0xf2, 0xff},
	color.RGBA{0xb8, 0x77, 0xd9, 0xff}, color.RGBA{0x70, 0x5d, 0xa0, 0xff}, color.RGBA{0x37, 0x87, 0x2d, 0xff},
	color.RGBA{0xfa, 0xde, 0x2a, 0xff},
}

// dashMaxLegend is the most legend entries a panel shows (W5's 100 coupons would fill it).
const dashMaxLegend = 8

// renderDashboard draws the dashboard's panels from a run's scrapes as one PNG at path, under
// a header (lines split at \n) saying what it is. It returns the metric names it read.
func renderDashboard(log *dashLog, header string, path string) (map[string]bool, error) {
	if len(log.scrapes) < 2 {
		return nil, fmt.Errorf("%d scrapes: too few for a rate", len(log.scrapes))
	}
	q := &dashQuery{log: log, read: map[string]bool{}}
	first, last := log.scrapes[0].at, log.scrapes[len(log.scrapes)-1].at
	var plots []*plot.Plot
	for _, p := range dashPanels {
		pl := plot.New()
		pl.Title.Text = p.title
		pl.X.Label.Text = "seconds since the load started"
		pl.Y.Label.Text = p.unit
		pl.X.Min, pl.X.Max = min(first, 0), last
		pl.Y.Min = 0
		pl.Y.Tick.Marker = plainTicks{}
		pl.Legend.Top = true
		pl.Add(plotter.NewGrid())
		lines := p.lines(q)
		drawn := 0
		for i, l := range lines {
			if len(l.xys) == 0 {
				continue
			}
			ln, pts, err := plotter.NewLinePoints(l.xys)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", p.title, l.legend, err)
			}
			col := dashPalette[i%len(dashPalette)]
			ln.Color, ln.Width = col, vg.Points(1.5)
			pl.Add(ln)
			if len(l.xys) < 3 { // a line of one point draws nothing: its points show
				pts.Color, pts.Shape, pts.Radius = col, draw.CircleGlyph{}, vg.Points(2.5)
				pl.Add(pts)
			}
			if drawn < dashMaxLegend {
				pl.Legend.Add(l.legend, ln)
			} else if drawn == dashMaxLegend {
				pl.Legend.Add(fmt.Sprintf("… %d more", len(lines)-dashMaxLegend), ln)
			}
			drawn++
		}
		if drawn > 0 {
			// Headroom above the lines for the legend (top right), so it does not hide the
			// event's end, where the lines often are highest.
			top := 0.0
			for _, l := range lines {
				for _, p := range l.xys {
					top = max(top, p.Y)
				}
			}
			if top > 0 {
				pl.Y.Max = top * (1.05 + 0.12*float64(min(drawn, dashMaxLegend+1)))
			}
		}
		if drawn == 0 { // as Grafana: the panel says so
			pl.Y.Max = 1
			lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: (first + last) / 2, Y: 0.5}}, Labels: []string{"No data"}})
			if err != nil {
				return nil, err
			}
			pl.Add(lbl)
		}
		plots = append(plots, pl)
	}

	// The dashboard's grid: its rows, each of two-panel lines, under a header.
	const cols = 2
	var (
		width     = 34 * vg.Centimeter
		headerH   = 2.2 * vg.Centimeter
		rowTitleH = 0.9 * vg.Centimeter
		panelH    = 7 * vg.Centimeter
	)
	var rows []string
	for _, p := range dashPanels {
		if len(rows) == 0 || rows[len(rows)-1] != p.row {
			rows = append(rows, p.row)
		}
	}
	lines := 0
	for _, r := range rows {
		n := 0
		for _, p := range dashPanels {
			if p.row == r {
				n++
			}
		}
		lines += (n + cols - 1) / cols
	}
	height := headerH + vg.Length(len(rows))*rowTitleH + vg.Length(lines)*panelH
	img := vgimg.New(width, height)
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())

	titleStyle := plot.New().Title.TextStyle
	titleStyle.XAlign, titleStyle.YAlign = draw.XLeft, draw.YBottom
	titleStyle.Font.Size = vg.Points(15)
	small := titleStyle
	small.Font.Size = vg.Points(10)
	top := height
	dc.FillText(titleStyle, vg.Point{X: vg.Centimeter / 2, Y: top - 0.7*vg.Centimeter}, "couponsvc: coupon event")
	for i, line := range strings.Split(header, "\n") {
		dc.FillText(small, vg.Point{X: vg.Centimeter / 2, Y: top - 1.3*vg.Centimeter - vg.Length(i)*0.5*vg.Centimeter}, line)
	}
	top -= headerH
	next := 0
	for _, r := range rows {
		rowStyle := titleStyle
		rowStyle.Font.Size = vg.Points(13)
		dc.FillText(rowStyle, vg.Point{X: vg.Centimeter / 2, Y: top - 0.6*vg.Centimeter}, "▾ "+r)
		top -= rowTitleH
		var grid [][]*plot.Plot
		for next < len(dashPanels) && dashPanels[next].row == r {
			if len(grid) == 0 || len(grid[len(grid)-1]) == cols {
				grid = append(grid, nil)
			}
			grid[len(grid)-1] = append(grid[len(grid)-1], plots[next])
			next++
		}
		for len(grid[len(grid)-1]) < cols {
			grid[len(grid)-1] = append(grid[len(grid)-1], nil)
		}
		h := vg.Length(len(grid)) * panelH
		area := draw.Canvas{Canvas: img, Rectangle: vg.Rectangle{Min: vg.Point{X: 0, Y: top - h}, Max: vg.Point{X: width, Y: top}}}
		tiles := draw.Tiles{Rows: len(grid), Cols: cols, PadX: vg.Centimeter, PadY: vg.Centimeter / 2,
			PadLeft: vg.Centimeter / 3, PadRight: vg.Centimeter / 2, PadBottom: vg.Centimeter / 4}
		canvases := plot.Align(grid, tiles, area)
		for i := range grid {
			for j, pl := range grid[i] {
				if pl != nil {
					pl.Draw(canvases[i][j])
				}
			}
		}
		top -= h
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return nil, err
	}
	return q.read, f.Close()
}

// plainTicks are gonum's default ticks labelled without trailing zeros (2500, not 2500.00).
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(math.Round(ts[i].Value*1e6)/1e6, 'f', -1, 64)
		}
	}
	return ts
}

// dashHeader says what a dashboard picture shows.
func dashHeader(r *result, log *dashLog) string {
	missed := 0
	for _, s := range log.scrapes {
		missed += s.missed
	}
	var longest float64
	for i := 1; i < len(log.scrapes); i++ {
		longest = max(longest, log.scrapes[i].at-log.scrapes[i-1].at)
	}
	h := fmt.Sprintf("Not Grafana: the panels of k8s/monitoring/dashboard.json, computed by cmd/bench from its scrapes of /metrics of %s on %s (%s); pods = its instances.\n"+
		"%d scrapes, every %v (the longest interval %.0f ms), from before the load to after it; rates over one interval; histogram_quantile over the buckets' increase.",
		r.design, r.workload.name, r.deployment, len(log.scrapes), log.interval, longest*1e3)
	if missed > 0 {
		h += fmt.Sprintf(" %d instance scrapes failed.", missed)
	}
	return h
}

// writeDashboards draws, for every deployment that ran workload wl with couponsvc, its
// dashboard as dir/charts/dashboard-<workload>-<deployment>.png (dir "": none), and the one of the deployment
// with the most instances also at extra (when set): the picture docs/OPERATING.md shows.
func writeDashboards(rep *report, dir, wl, extra string) ([]chart, error) {
	var out []chart
	var widest *result
	for _, r := range rep.results {
		if r.design != designCouponsvc || r.workload.name != wl || r.dash == nil {
			continue
		}
		if dir != "" {
			c := chart{workload: wl, title: r.workload.title, dep: r.deployment,
				file: filepath.ToSlash(filepath.Join(chartsDir, "dashboard-"+wl+"-"+r.deployment.slug()+".png"))}
			if _, err := renderDashboard(r.dash, dashHeader(r, r.dash), filepath.Join(dir, c.file)); err != nil {
				return out, fmt.Errorf("dashboard %s: %w", c.file, err)
			}
			out = append(out, c)
		}
		if widest == nil || r.deployment.instances > widest.deployment.instances {
			widest = r
		}
	}
	if extra != "" {
		if widest == nil {
			return out, fmt.Errorf("no couponsvc run of %s to draw the dashboard of at %s", wl, extra)
		}
		if _, err := renderDashboard(widest.dash, dashHeader(widest, widest.dash), extra); err != nil {
			return out, fmt.Errorf("dashboard %s: %w", extra, err)
		}
	}
	return out, nil
}

// dashboardsMarkdown is the report's section that shows the dashboards.
func dashboardsMarkdown(dashes []chart) string {
	if len(dashes) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "### The dashboard\n\nThe panels of the Grafana dashboard (k8s/monitoring/dashboard.json), computed as their PromQL computes them from couponsvc's /metrics scraped every %v during %s's load (not Grafana: rendered by cmd/bench), per deployment.\n\n",
		dashScrapeEvery, dashes[0].workload)
	for _, c := range dashes {
		fmt.Fprintf(&b, "![the dashboard, %s (%s): %s](%s)\n\n", c.workload, c.dep, c.title, c.file)
	}
	return b.String()
}
