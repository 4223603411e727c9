package main

import (
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syntheticResult is a run of n requests sent evenly over one second, the first `won` of them
// answered 201 after lat each, the others 410 after lat/10.
func syntheticResult(design string, dep deployment, wl *workload, n, won int, lat time.Duration) *result {
	r := &result{design: design, deployment: dep, workload: wl}
	for i := range n {
		s := sample{sent: true, sendNs: int64(i) * int64(time.Second) / int64(n), status: 410, latNs: int64(lat / 10)}
		if i < won {
			s.status, s.latNs = 201, int64(lat)
		}
		s.endNs = s.sendNs + s.latNs
		r.load.samples = append(r.load.samples, s)
	}
	r.load.samples = append(r.load.samples, sample{}) // one not sent: left out
	return r
}

// hasColour reports whether img has a pixel of exactly c (a line drawn in it).
func hasColour(img image.Image, c color.Color) bool {
	want := color.RGBAModel.Convert(c)
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)) == want {
				return true
			}
		}
	}
	return false
}

func TestWriteCharts(t *testing.T) {
	w1 := &workload{name: "W1", title: "sold-out crowd"}
	w2 := &workload{name: "W2", title: "another"}
	nginx3 := deployment{instances: 3, nginx: true}
	rep := &report{results: []*result{
		syntheticResult(designCouponsvc, direct, w1, 1000, 300, 2*time.Millisecond),
		syntheticResult(designReference, direct, w1, 1000, 300, 200*time.Millisecond),
		syntheticResult(designCouponsvc, nginx3, w1, 500, 100, 3*time.Millisecond),
		{design: designCouponsvc, deployment: direct, workload: w2}, // nothing sent: no chart
	}}
	dir := t.TempDir()
	stale := filepath.Join(dir, chartsDir, "W9-direct.png") // from an earlier run
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	charts, err := writeCharts(rep, dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, c := range charts {
		files = append(files, c.file)
	}
	if got, want := strings.Join(files, " "), "charts/W1-direct.png charts/W1-nginx-3.png"; got != want {
		t.Fatalf("charts %q, want %q", got, want)
	}
	for i, c := range charts {
		f, err := os.Open(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 500 {
			t.Errorf("%s is %v: too small to read", c.file, b)
		}
		// Both designs are drawn where both ran, and only couponsvc where only it ran.
		if !hasColour(img, designStyle[designCouponsvc]) {
			t.Errorf("%s: no couponsvc line", c.file)
		}
		if got := hasColour(img, designStyle[designReference]); got != (i == 0) {
			t.Errorf("%s: reference line drawn = %v, want %v", c.file, got, i == 0)
		}
	}

	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("an earlier run's chart is left next to the report (%v)", err)
	}

	rep.charts = charts
	md := rep.markdown()
	for _, want := range []string{"### Charts", "![W1 (direct): sold-out crowd](charts/W1-direct.png)", "![W1 (3 behind nginx): sold-out crowd](charts/W1-nginx-3.png)"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

func TestChartSeries(t *testing.T) {
	r := syntheticResult(designCouponsvc, direct, &workload{name: "W1"}, 1000, 300, 2*time.Millisecond)
	issued := issuedOverTime(r)
	// From (0, 0) to 300 at the 300th answer, then flat to the run's last answer.
	if len(issued) != 302 || issued[0].Y != 0 || issued[300].Y != 300 || issued[301].Y != 300 || issued[301].X < 0.999 {
		t.Fatalf("issued over time: %d points, from %v to %v; want 0 to 300", len(issued), issued[0], issued[len(issued)-1])
	}
	for i := 1; i < len(issued); i++ {
		if issued[i].X < issued[i-1].X {
			t.Fatalf("issued over time goes back in time at %d: %v then %v", i, issued[i-1], issued[i])
		}
	}
	p50, p99 := latencyOverTime(r, 10)
	if len(p50) != 10 || len(p99) != 10 {
		t.Fatalf("%d and %d bins, want 10", len(p50), len(p99))
	}
	// The first 300 requests (0.3 s) waited 2 ms, the rest 0.2 ms: the first bins show 2 ms,
	// the last ones 0.2 ms, at their middles.
	if p99[0].Y != 2 || p50[9].Y != 0.2 || p50[0].X <= 0 || p50[0].X >= 0.1 {
		t.Errorf("bins: p99 %v, p50 %v", p99, p50)
	}
}
