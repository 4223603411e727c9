// Package jmeter holds the JMeter flash-crowd plan (coupon-flash.jmx), the launcher that makes
// Debian's JMeter 2.13 load it (jmeter.sh, launcher/), and the Go code that runs it and turns
// its results (.jtl) into the figures that matter: requests per second, latency percentiles,
// answers per status, and the coupons issued compared with what the service reports.
//
// Commands: ./cmd/loadtest (run the plan against a service, then summarise and check) and
// ./cmd/jtlsummary (summarise and check a .jtl from any JMeter run).
package jmeter

import (
	"bufio"
	"couponsvc/internal/stats"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sample is one line of a CSV .jtl.
type Sample struct {
	Start   time.Time     // when the request started (see startTimestamps)
	Elapsed time.Duration // until the last byte of the answer
	Label   string        // sampler name: "issue A0001", "retry A0001", ...
	Code    string        // HTTP status, or JMeter's "Non HTTP response code: ..." on I/O errors
	Success bool          // after the plan's assertions
	Message string        // failureMessage when the .jtl has it
}

// The columns of a CSV .jtl written by JMeter 2.13 with its default settings and no header line
// (2.13 writes no header unless jmeter.save.saveservice.print_field_names=true).
var jmeter213Columns = []string{"timeStamp", "elapsed", "label", "responseCode", "responseMessage",
	"threadName", "dataType", "success", "bytes", "grpThreads", "allThreads", "Latency"}

// ReadJTLFile reads a CSV .jtl file.
func ReadJTLFile(path string) ([]Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := ReadJTL(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ReadJTL reads a CSV .jtl (JMeter's default result format) with or without its header line.
// Timestamps are taken as start times (JMeter's sampleresult.timestamp.start=true, which
// Run sets); with end times the figures move by one response time at most.
func ReadJTL(r io.Reader) ([]Sample, error) {
	br := bufio.NewReader(r)
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = false
	first, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read .jtl: %w", err)
	}
	if strings.HasPrefix(strings.TrimSpace(first[0]), "<") {
		return nil, errors.New("this .jtl is XML; run JMeter with -Jjmeter.save.saveservice.output_format=csv")
	}
	header := first
	var pending []string
	if first[0] != "timeStamp" {
		header, pending = jmeter213Columns, first
	}
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	for _, need := range []string{"timeStamp", "elapsed", "label", "responseCode", "success"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("read .jtl: no %q column in %v", need, header)
		}
	}
	get := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	var out []Sample
	line := 1
	for {
		rec := pending
		pending = nil
		if rec == nil {
			rec, err = cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read .jtl: %w", err)
			}
		}
		line++
		ts, err1 := strconv.ParseInt(get(rec, "timeStamp"), 10, 64)
		el, err2 := strconv.ParseInt(get(rec, "elapsed"), 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("read .jtl: record %d: timeStamp %q / elapsed %q are not milliseconds (use jmeter.save.saveservice.timestamp_format=ms)",
				line, get(rec, "timeStamp"), get(rec, "elapsed"))
		}
		out = append(out, Sample{
			Start:   time.UnixMilli(ts),
			Elapsed: time.Duration(el) * time.Millisecond,
			Label:   get(rec, "label"),
			Code:    get(rec, "responseCode"),
			Success: get(rec, "success") == "true",
			Message: get(rec, "failureMessage"),
		})
	}
	return out, nil
}

// Expected reports whether an issue request's status is an expected outcome of a flash crowd:
// 201 issued, 409 already issued, 410 sold out.
func Expected(code string) bool { return code == "201" || code == "409" || code == "410" }

// CouponCode is the coupon a sample asked for, from its label ("issue A0001" -> "A0001"), or "".
func CouponCode(label string) string {
	if kind, code, ok := strings.Cut(label, " "); ok && (kind == "issue" || kind == "retry") {
		return code
	}
	return ""
}

// Summary holds the figures of one run.
type Summary struct {
	Samples     int
	Failed      int // success=false in the .jtl (the plan's assertion: not 201/409/410)
	ServerError int // 5xx answers
	NonHTTP     int // no HTTP answer at all (connection refused or reset, timeout)
	First, Last time.Time
	Duration    time.Duration
	PerSecond   float64
	Mean        time.Duration
	P50         time.Duration
	P95         time.Duration
	P99         time.Duration
	Max         time.Duration
	ByStatus    map[string]int            // status -> count
	ByLabel     map[string]map[string]int // label -> status -> count
	Issued      map[string]int            // coupon code -> 201 answers
	FreshDup    map[string]int            // coupon code -> 409 answers to a user's first request
}

// Summarize computes the figures of a run.
func Summarize(samples []Sample) Summary {
	s := Summary{ByStatus: map[string]int{}, ByLabel: map[string]map[string]int{},
		Issued: map[string]int{}, FreshDup: map[string]int{}}
	if len(samples) == 0 {
		return s
	}
	elapsed := make([]time.Duration, 0, len(samples))
	var total time.Duration
	s.First = samples[0].Start
	for _, x := range samples {
		s.Samples++
		if !x.Success {
			s.Failed++
		}
		status := x.Code
		if strings.HasPrefix(status, "Non HTTP") {
			s.NonHTTP++
			status = "non-HTTP"
		} else if strings.HasPrefix(status, "5") {
			s.ServerError++
		}
		s.ByStatus[status]++
		if s.ByLabel[x.Label] == nil {
			s.ByLabel[x.Label] = map[string]int{}
		}
		s.ByLabel[x.Label][status]++
		if code := CouponCode(x.Label); code != "" {
			switch {
			case x.Code == "201":
				s.Issued[code]++
			case x.Code == "409" && strings.HasPrefix(x.Label, "issue "):
				s.FreshDup[code]++
			}
		}
		if x.Start.Before(s.First) {
			s.First = x.Start
		}
		if end := x.Start.Add(x.Elapsed); end.After(s.Last) {
			s.Last = end
		}
		elapsed = append(elapsed, x.Elapsed)
		total += x.Elapsed
	}
	s.Duration = s.Last.Sub(s.First)
	if s.Duration > 0 {
		s.PerSecond = float64(s.Samples) / s.Duration.Seconds()
	}
	slices.Sort(elapsed)
	s.Mean = total / time.Duration(len(elapsed))
	s.P50, s.P95, s.P99 = stats.Percentile(elapsed, 0.50), stats.Percentile(elapsed, 0.95), stats.Percentile(elapsed, 0.99)
	s.Max = elapsed[len(elapsed)-1]
	return s
}

// Write prints the figures as a short human-readable report.
func (s Summary) Write(w io.Writer) {
	fmt.Fprintf(w, "requests      %d in %.1fs = %.0f/s\n", s.Samples, s.Duration.Seconds(), s.PerSecond)
	fmt.Fprintf(w, "latency       mean %v  p50 %v  p95 %v  p99 %v  max %v\n",
		ms(s.Mean), ms(s.P50), ms(s.P95), ms(s.P99), ms(s.Max))
	fmt.Fprintf(w, "failed        %d (5xx %d, no HTTP answer %d)\n", s.Failed, s.ServerError, s.NonHTTP)
	fmt.Fprintf(w, "by status    ")
	for _, k := range sortedKeys(s.ByStatus) {
		fmt.Fprintf(w, " %s=%d", k, s.ByStatus[k])
	}
	fmt.Fprintln(w)
	for _, label := range sortedKeys(s.ByLabel) {
		fmt.Fprintf(w, "  %-18s", label)
		for _, k := range sortedKeys(s.ByLabel[label]) {
			fmt.Fprintf(w, " %s=%d", k, s.ByLabel[label][k])
		}
		fmt.Fprintln(w)
	}
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
