package monitoring

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const namespace = "coupon"

// promql is Prometheus's own parser, with the options a default Prometheus server runs with.
var promql = parser.NewParser(parser.Options{})

// rendered is the overlay, built with kustomize's Go API and decoded strictly: a field the
// Prometheus Operator's types do not have (a typo, a wrong level) fails the test.
type rendered struct {
	serviceMonitors []*monitoringv1.ServiceMonitor
	rules           []*monitoringv1.PrometheusRule
	configMaps      map[string]*corev1.ConfigMap
	services        map[string]*corev1.Service
	yaml            map[string]string // kind/name -> YAML of every object
}

func build(t *testing.T, dir string) resmap.ResMap {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return m
}

// setups are the kustomizations of couponsvc that k8s/monitoring is applied next to.
var setups = []string{"..", "../autoscale", "../production"}

func render(t *testing.T, dir string) *rendered {
	t.Helper()
	r := &rendered{configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{}, yaml: map[string]string{}}
	for _, res := range build(t, dir).Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", res.CurId(), err)
		}
		kind, name := res.GetKind(), res.GetName()
		r.yaml[kind+"/"+name] = string(y)
		var obj any
		switch kind {
		case "ServiceMonitor":
			v := &monitoringv1.ServiceMonitor{}
			r.serviceMonitors, obj = append(r.serviceMonitors, v), v
		case "PrometheusRule":
			v := &monitoringv1.PrometheusRule{}
			r.rules, obj = append(r.rules, v), v
		case "ConfigMap":
			v := &corev1.ConfigMap{}
			r.configMaps[name], obj = v, v
		case "Service":
			v := &corev1.Service{}
			r.services[name], obj = v, v
		default:
			continue // a setup's other objects: k8s/manifests_test.go checks them
		}
		if err := yaml.UnmarshalStrict(y, obj); err != nil {
			t.Errorf("%s/%s does not decode strictly into its type: %v\n%s", kind, name, err, y)
		}
	}
	return r
}

// TestOnlyMonitoringObjects: applied next to a setup, the kustomization must not carry any of
// the setup's objects (an apply would reset an event's replica count, or fight the autoscaler).
func TestOnlyMonitoringObjects(t *testing.T) {
	var got []string
	for id := range render(t, ".").yaml {
		got = append(got, id)
	}
	sort.Strings(got)
	want := []string{"ConfigMap/couponsvc-dashboard", "PrometheusRule/couponsvc-event", "ServiceMonitor/coupon-api"}
	if !slices.Equal(got, want) {
		t.Errorf("k8s/monitoring renders %v, want only %v", got, want)
	}
}

// TestServiceMonitor: in every setup, it selects the API's Service (and only it), on a port the
// Service has, in the setup's namespace, with the label kube-prometheus-stack's Prometheus
// selects by.
func TestServiceMonitor(t *testing.T) {
	r := render(t, ".")
	for _, dir := range setups {
		name := strings.TrimPrefix(dir, "../")
		if dir == ".." {
			name = "event"
		}
		t.Run(name, func(t *testing.T) { checkServiceMonitor(t, r, render(t, dir)) })
	}
}

func checkServiceMonitor(t *testing.T, r, setup *rendered) {
	t.Helper()
	if len(r.serviceMonitors) != 1 {
		t.Fatalf("want one ServiceMonitor, got %d", len(r.serviceMonitors))
	}
	sm := r.serviceMonitors[0]
	if sm.Namespace != namespace {
		t.Errorf("ServiceMonitor in namespace %q, want %q", sm.Namespace, namespace)
	}
	if sm.Labels["release"] == "" {
		t.Error("ServiceMonitor has no release label: kube-prometheus-stack's Prometheus would not select it")
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var selected []string
	for name, svc := range setup.services {
		if svc.Namespace == sm.Namespace && sel.Matches(labels.Set(svc.Labels)) {
			selected = append(selected, name)
		}
	}
	if !slices.Equal(selected, []string{"coupon-api"}) {
		t.Fatalf("ServiceMonitor selects Services %v, want [coupon-api]", selected)
	}
	api := setup.services["coupon-api"]
	if len(sm.Spec.Endpoints) == 0 {
		t.Fatal("ServiceMonitor has no endpoints")
	}
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(api.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
			t.Errorf("endpoint port %q is not a named port of Service coupon-api", ep.Port)
		}
		if ep.Path != "/metrics" {
			t.Errorf("endpoint path %q, want /metrics", ep.Path)
		}
		if ep.Interval == "" {
			t.Error("endpoint has no interval: Prometheus's default (30 s or 1 m) is longer than an event's opening")
		}
	}
}

// TestPrometheusRule: the alerts an event needs are there, and Prometheus itself would load
// them: every expression through its PromQL parser, the whole group (templates of summaries and
// descriptions included) through its rule-file loader, as the Operator hands them over.
func TestPrometheusRule(t *testing.T) {
	r := render(t, ".")
	if len(r.rules) != 1 {
		t.Fatalf("want one PrometheusRule, got %d", len(r.rules))
	}
	pr := r.rules[0]
	if pr.Namespace != namespace || pr.Labels["release"] == "" {
		t.Errorf("PrometheusRule in namespace %q with labels %v: want %q and a release label", pr.Namespace, pr.Labels, namespace)
	}
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Alert)
			expr := rule.Expr.String()
			if _, err := promql.ParseExpr(expr); err != nil {
				t.Errorf("alert %s: %v\n%s", rule.Alert, err, expr)
			}
			if rule.Alert == "" || rule.For == nil || rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
				t.Errorf("rule %q: want an alert with for, a severity label and a summary", rule.Alert)
			}
		}
	}
	for _, want := range []string{"CouponsvcLockTimeouts", "CouponsvcUnavailable", "CouponsvcServerErrors",
		"CouponsvcArrivalLagHigh", "CouponsvcIssuingStalled", "CouponsvcPodNotReady"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (have %v)", want, alerts)
		}
	}

	// The Operator writes spec.groups as a Prometheus rule file; load it as Prometheus does.
	file, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := rulefmt.Parse(file, false, model.UTF8Validation, promql, slog.New(slog.NewTextHandler(io.Discard, nil))); len(errs) > 0 {
		t.Errorf("Prometheus refuses the rules: %v\n%s", errs, file)
	}
}

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// grafanaVar is a dashboard variable in a query: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// labelValues is a variable's query: label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)

// asPromQL replaces Grafana's variables with what Grafana would send: a range for the interval
// variables, a value inside the label matchers for the dashboard's own.
func asPromQL(q string) string {
	return grafanaVar.ReplaceAllStringFunc(q, func(v string) string {
		switch strings.Trim(v, "${}") {
		case "__rate_interval", "__interval", "__range":
			return "1m"
		}
		return "x"
	})
}

// selectedMetrics parses q with Prometheus's parser and returns the metric name of every
// selector in it.
func selectedMetrics(q string) ([]string, error) {
	expr, err := promql.ParseExpr(asPromQL(q))
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names, nil
}

// TestDashboard: the ConfigMap is the dashboard file, labelled for Grafana's sidecar, and every
// query of the dashboard parses with Prometheus's parser and reads the service's metrics only
// (whose names the service module's dashboard_test.go checks against a running /metrics).
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	r := render(t, ".")
	cm := r.configMaps["couponsvc-dashboard"]
	if cm == nil {
		t.Fatal("no ConfigMap couponsvc-dashboard")
	}
	if cm.Namespace != namespace || cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("ConfigMap in %q with labels %v: want %q and grafana_dashboard=1 (the sidecar's label)", cm.Namespace, cm.Labels, namespace)
	}
	if len(cm.Data) != 1 || cm.Data["couponsvc-event.json"] != string(raw) {
		t.Errorf("ConfigMap data keys %v: want couponsvc-event.json holding dashboard.json as is", slices.Sorted(maps.Keys(cm.Data)))
	}

	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard.json has no uid or title: the sidecar would import a new copy on every change")
	}
	var queries []string
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query: %v", v.Name, err)
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		queries = append(queries, m[1])
	}
	panels := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		panels++
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries = append(queries, tg.Expr)
		}
	}
	if panels < 10 {
		t.Errorf("%d panels: want the event's (issued/s, stock, outcomes, latencies, lock, batch, transaction, lag, in-flight, per pod)", panels)
	}
	for _, q := range queries {
		names, err := selectedMetrics(q)
		if err != nil {
			t.Errorf("query does not parse: %v\n%s", err, q)
			continue
		}
		if len(names) == 0 {
			t.Errorf("query selects no metric: %s", q)
		}
		for _, n := range names {
			if !strings.HasPrefix(n, "couponsvc_") {
				t.Errorf("query reads %q, not a couponsvc metric (the service test cannot vouch for it): %s", n, q)
			}
		}
	}
}

// TestSelectedMetrics: the check above sees a misspelt query and a foreign metric.
func TestSelectedMetrics(t *testing.T) {
	if _, err := selectedMetrics(`sum by (coupon) (rate(couponsvc_issue_total{coupon=~"$coupon"}[$__rate_interval])`); err == nil {
		t.Error("an unbalanced parenthesis parsed")
	}
	names, err := selectedMetrics(`sum(rate(couponsvc_issue_total{pod=~"${pod}"}[$__rate_interval])) / sum(up)`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"couponsvc_issue_total", "up"}) {
		t.Errorf("selected %v", names)
	}
}
