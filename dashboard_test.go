package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// monitoringFiles are what k8s/monitoring ships that names the service's metrics: the Grafana
// dashboard and the alerts.
var monitoringFiles = []string{"k8s/monitoring/dashboard.json", "k8s/monitoring/prometheusrule.yaml"}

// metricName matches the service's metric names wherever the files write them (queries,
// template variables, descriptions). That every dashboard query selects only couponsvc_ metrics,
// and that each query and rule parses, is checked with Prometheus's own parser in k8s/monitoring.
var metricName = regexp.MustCompile(`\bcouponsvc_[a-zA-Z0-9_]+`)

// exposedNames returns the metric names of a /metrics text exposition: one per series line, so
// histograms give their _bucket, _sum and _count names as Prometheus stores them.
func exposedNames(exposition string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// TestDashboardMetricsExist reads the dashboard and the alerts and checks every metric name they
// use against the real /metrics of a running service (after an issue, so that the labelled series
// exist), so that renaming a metric fails here instead of leaving an empty panel on the event's
// screen or an alert that can never fire.
func TestDashboardMetricsExist(t *testing.T) {
	used := map[string][]string{} // file -> names
	for _, f := range monitoringFiles {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names := metricName.FindAllString(string(raw), -1)
		slices.Sort(names)
		used[f] = slices.Compact(names)
		if len(used[f]) < 3 {
			t.Fatalf("%s names only %d couponsvc metrics (%v)", f, len(used[f]), used[f])
		}
	}

	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	createCoupon(t, st.dsn, "DASH", 3)
	if a := in.issue(t, "DASH", uuid.New()); a.status != 201 {
		t.Fatalf("issue: %d %s", a.status, a.body)
	}
	m := string(do(t, "GET", in.base+"/metrics", "").body)
	exposed := exposedNames(m)
	for _, f := range monitoringFiles {
		for _, name := range used[f] {
			if !exposed[name] {
				t.Errorf("%s uses %s, which the service's /metrics does not expose", f, name)
			}
		}
	}
	// The remaining-stock panel's figure: the stock less this instance's batch.
	if want := `couponsvc_coupon_remaining{coupon="DASH"} 2`; !strings.Contains(m, want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

// TestExposedNames checks the parsing the dashboard test relies on, including a misnamed
// metric, so that the check above can fail.
func TestExposedNames(t *testing.T) {
	names := exposedNames("# HELP x_seconds help\n# TYPE x_seconds histogram\n" +
		"x_seconds_bucket{le=\"0.1\"} 1\nx_seconds_sum 0.05\nx_seconds_count 1\ny_total 3\n")
	for _, want := range []string{"x_seconds_bucket", "x_seconds_sum", "x_seconds_count", "y_total"} {
		if !names[want] {
			t.Errorf("missing %s in %v", want, names)
		}
	}
	if names["x_seconds"] || names["couponsvc_renamed_total"] {
		t.Errorf("names a series that is not there: %v", names)
	}
}
