package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"couponsvc/internal/stats"
)

// chartsDir is where the charts go, next to the report: cmd/bench/charts/ for RESULTS.md.
const chartsDir = "charts"

// latencyBins is the number of send-time slices of a run whose percentiles the latency chart
// draws: enough to show a crowd's build-up, few enough that each slice holds many requests.
const latencyBins = 60

// chart is one written picture: a workload in a deployment, every design that ran it.
type chart struct {
	workload, title string
	dep             deployment
	file            string // relative to the report's directory
}

// designStyle gives each design one colour in every chart: couponsvc blue, the reference red.
var designStyle = map[string]color.Color{
	designCouponsvc: color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	designReference: color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
}

// slug names a deployment in a file name.
func (d deployment) slug() string {
	if !d.nginx {
		return "direct"
	}
	return fmt.Sprintf("nginx-%d", d.instances)
}

// writeCharts draws, for every workload and deployment of rep, the coupons issued over time
// (cumulative 201 answers by the time they were answered) above the latency percentiles over
// time (p50 and p99 of the requests sent in each slice of the run), one line per design, and
// writes them as PNG files under dir/charts, replacing the charts of an earlier run (so that
// the directory shows what the report next to it says). It returns them in the report's order.
func writeCharts(rep *report, dir string) ([]chart, error) {
	if err := os.MkdirAll(filepath.Join(dir, chartsDir), 0o755); err != nil {
		return nil, err
	}
	old, err := filepath.Glob(filepath.Join(dir, chartsDir, "*.png"))
	if err != nil {
		return nil, err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return nil, err
		}
	}
	var out []chart
	for _, dep := range rep.deployments() {
		var names []string
		for _, r := range rep.results {
			if r.deployment == dep && !slices.Contains(names, r.workload.name) {
				names = append(names, r.workload.name)
			}
		}
		for _, wl := range names {
			var rs []*result
			for _, d := range []string{designCouponsvc, designReference} {
				if r := rep.find(d, dep, wl); r != nil && r.sent() > 0 {
					rs = append(rs, r)
				}
			}
			if len(rs) == 0 {
				continue
			}
			c := chart{workload: wl, title: rs[0].workload.title, dep: dep,
				file: filepath.ToSlash(filepath.Join(chartsDir, wl+"-"+dep.slug()+".png"))}
			if err := drawChart(rs, c, filepath.Join(dir, c.file)); err != nil {
				return out, fmt.Errorf("chart %s: %w", c.file, err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

func drawChart(rs []*result, c chart, path string) error {
	issued := plot.New()
	issued.Title.Text = fmt.Sprintf("%s (%s): coupons issued", c.workload, c.dep)
	issued.X.Label.Text = "seconds since the load started"
	issued.Y.Label.Text = "201 answers (cumulative)"
	issued.Legend.Top, issued.Legend.Left = false, false
	issued.Add(plotter.NewGrid())

	lat := plot.New()
	lat.Title.Text = fmt.Sprintf("%s (%s): latency p50 (dashed) and p99 by send time", c.workload, c.dep)
	lat.X.Label.Text = "send time, seconds since the load started"
	lat.Y.Label.Text = "latency, ms (log scale)"
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	lat.Legend.Top = true
	lat.Add(plotter.NewGrid())

	for _, r := range rs {
		col := designStyle[r.design]
		line, err := plotter.NewLine(issuedOverTime(r))
		if err != nil {
			return err
		}
		line.Color, line.Width = col, vg.Points(1.5)
		issued.Add(line)
		issued.Legend.Add(r.design, line)

		p50, p99 := latencyOverTime(r, latencyBins)
		for _, q := range []struct {
			name string
			xys  plotter.XYs
			dash []vg.Length
		}{{"p50", p50, []vg.Length{vg.Points(4), vg.Points(3)}}, {"p99", p99, nil}} {
			if len(q.xys) == 0 {
				continue
			}
			l, err := plotter.NewLine(q.xys)
			if err != nil {
				return err
			}
			l.Color, l.Width, l.Dashes = col, vg.Points(1.5), q.dash
			lat.Add(l)
			lat.Legend.Add(r.design+" "+q.name, l)
		}
	}

	// One time axis for both plots and both designs: the longest run.
	var end float64
	for _, r := range rs {
		end = max(end, seconds(lastAnswer(r)))
	}
	for _, p := range []*plot.Plot{issued, lat} {
		p.X.Min, p.X.Max = 0, end
	}

	const w, h = 24 * vg.Centimeter, 20 * vg.Centimeter
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter * 2, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{issued}, {lat}}, tiles, dc)
	issued.Draw(canvases[0][0])
	lat.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// issuedOverTime is the cumulative count of 201 answers against the time of the answer, in
// seconds since the load started, starting at (0, 0).
func issuedOverTime(r *result) plotter.XYs {
	var ends []int64
	for _, s := range r.load.samples {
		if s.sent && s.status == 201 {
			ends = append(ends, s.endNs)
		}
	}
	slices.Sort(ends)
	xys := plotter.XYs{{X: 0, Y: 0}}
	for i, e := range ends {
		xys = append(xys, plotter.XY{X: seconds(e), Y: float64(i + 1)})
	}
	// Flat to the run's last answer: how long the crowd went on after the last coupon.
	if end := seconds(lastAnswer(r)); end > xys[len(xys)-1].X {
		xys = append(xys, plotter.XY{X: end, Y: float64(len(ends))})
	}
	return xys
}

// lastAnswer is the end of the run's last answer, since the load started.
func lastAnswer(r *result) int64 {
	var end int64
	for _, s := range r.load.samples {
		if s.sent {
			end = max(end, s.endNs)
		}
	}
	return end
}

// latencyOverTime splits the run into bins slices of send time and gives the p50 and p99
// latency (ms) of the requests sent in each, at the slice's middle; empty slices are left out.
// Transport errors count at the time they took, as in the report's percentiles.
func latencyOverTime(r *result, bins int) (p50, p99 plotter.XYs) {
	var last int64
	for _, s := range r.load.samples {
		if s.sent {
			last = max(last, s.sendNs)
		}
	}
	width := max(last/int64(bins)+1, 1)
	slots := make([][]int64, bins+1)
	for _, s := range r.load.samples {
		if s.sent {
			i := min(int(s.sendNs/width), bins)
			slots[i] = append(slots[i], s.latNs)
		}
	}
	for i, lats := range slots {
		if len(lats) == 0 {
			continue
		}
		slices.Sort(lats)
		x := seconds(int64(i)*width + width/2)
		// A log scale cannot show 0: a latency under a microsecond is drawn at one.
		p50 = append(p50, plotter.XY{X: x, Y: math.Max(ms(stats.Percentile(lats, 0.5)), 0.001)})
		p99 = append(p99, plotter.XY{X: x, Y: math.Max(ms(stats.Percentile(lats, 0.99)), 0.001)})
	}
	return p50, p99
}

func seconds(ns int64) float64 { return time.Duration(ns).Seconds() }
func ms(ns int64) float64      { return float64(ns) / 1e6 }

// chartsMarkdown is the report's section that shows the charts.
func chartsMarkdown(charts []chart) string {
	if len(charts) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("### Charts\n\nPer workload and deployment: the coupons issued over time (cumulative 201 answers, by the time of the answer) and the p50 (dashed) and p99 latency of the requests sent in each slice of the run, couponsvc in blue, the reference design in red.\n\n")
	for _, c := range charts {
		fmt.Fprintf(&b, "![%s (%s): %s](%s)\n\n", c.workload, c.dep, c.title, c.file)
	}
	return b.String()
}
