package monitoring

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/promqltest"
)

// alertExpr is the expression of the rendered rule named alert.
func alertExpr(t *testing.T, alert string) string {
	t.Helper()
	for _, pr := range render(t, ".").rules {
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				if r.Alert == alert {
					return r.Expr.String()
				}
			}
		}
	}
	t.Fatalf("no alert %s", alert)
	return ""
}

// firing evaluates expr with Prometheus's engine over the series of load (promqltest's load
// syntax, from time 0) at `at`, and returns the value of label of every element of the result:
// what the alert would fire for, before its `for`.
func firing(t *testing.T, load, expr string, at time.Duration, label string) []string {
	t.Helper()
	st := promqltest.LoadedStorage(t, load)
	eng := promqltest.NewTestEngine(t, false, 0, 1_000_000)
	q, err := eng.NewInstantQuery(context.Background(), st, nil, expr, time.Unix(0, 0).Add(at))
	if err != nil {
		t.Fatalf("%v\n%s", err, expr)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, expr)
	}
	v, err := res.Vector()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range v {
		out = append(out, s.Metric.Get(label))
	}
	slices.Sort(out)
	return out
}

// TestAlertsFire evaluates the alerts whose expressions carry the most logic against series of
// an event, each with the cases that must fire and those that must not.
func TestAlertsFire(t *testing.T) {
	// A scrape every 15 s for 5 minutes; counters go up by the amount given per scrape.
	const at = 5 * time.Minute
	cases := []struct {
		alert, label string
		series       []string
		want         []string
	}{{
		alert: "CouponsvcIssuingStalled", label: "coupon",
		series: []string{
			// STUCK: requests time out on the lock, nothing issued, stock left: fires.
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="STUCK",result="issued"} 10x20`,
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="STUCK",result="lock_timeout"} 0+60x20`,
			`couponsvc_coupon_remaining{namespace="coupon",pod="p1",coupon="STUCK"} 90x20`,
			// NEVER: never issued anything (no issued series), every answer unavailable: fires.
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="NEVER",result="unavailable"} 0+60x20`,
			`couponsvc_coupon_remaining{namespace="coupon",pod="p1",coupon="NEVER"} 100x20`,
			// GONE: sold out, the crowd keeps pressing: stock 0, does not fire.
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="GONE",result="issued"} 300x20`,
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="GONE",result="sold_out"} 0+600x20`,
			`couponsvc_coupon_remaining{namespace="coupon",pod="p1",coupon="GONE"} 0x20`,
			// EARLY: pressed before it opens: does not fire.
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="EARLY",result="event_not_open"} 0+600x20`,
			`couponsvc_coupon_remaining{namespace="coupon",pod="p1",coupon="EARLY"} 100x20`,
			// FLOW: issuing on one pod, requests on two: does not fire.
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="FLOW",result="issued"} 0+60x20`,
			`couponsvc_issue_total{namespace="coupon",pod="p2",coupon="FLOW",result="lock_timeout"} 0+60x20`,
			`couponsvc_coupon_remaining{namespace="coupon",pod="p1",coupon="FLOW"} 1000-60x20`,
			`couponsvc_coupon_remaining{namespace="coupon",pod="p2",coupon="FLOW"} 1000x20`,
		},
		want: []string{"NEVER", "STUCK"},
	}, {
		alert: "CouponsvcLockTimeouts", label: "coupon",
		series: []string{
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="HOT",result="lock_timeout"} 0+30x20`,
			`couponsvc_issue_total{namespace="coupon",pod="p1",coupon="CALM",result="lock_timeout"} 0+1x20`,
		},
		want: []string{"HOT"},
	}, {
		alert: "CouponsvcServerErrors", label: "namespace",
		series: []string{
			`couponsvc_http_requests_total{namespace="bad",pod="p1",route="/api/v1/coupons/:code/issue",method="POST",status="201"} 0+900x20`,
			`couponsvc_http_requests_total{namespace="bad",pod="p1",route="/api/v1/coupons/:code/issue",method="POST",status="503"} 0+100x20`,
			`couponsvc_http_requests_total{namespace="good",pod="p1",route="/api/v1/coupons/:code/issue",method="POST",status="201"} 0+1000x20`,
			`couponsvc_http_requests_total{namespace="good",pod="p1",route="/api/v1/coupons/:code/issue",method="POST",status="503"} 0+1x20`,
		},
		want: []string{"bad"},
	}, {
		alert: "CouponsvcArrivalLagHigh", label: "pod",
		series: []string{
			// slow: every request waited between 0.128 s and 0.256 s; quick: all under 1 ms.
			`couponsvc_issue_arrival_lag_seconds_bucket{namespace="coupon",pod="slow",le="0.001"} 0x20`,
			`couponsvc_issue_arrival_lag_seconds_bucket{namespace="coupon",pod="slow",le="0.256"} 0+100x20`,
			`couponsvc_issue_arrival_lag_seconds_bucket{namespace="coupon",pod="slow",le="+Inf"} 0+100x20`,
			`couponsvc_issue_arrival_lag_seconds_bucket{namespace="coupon",pod="quick",le="0.001"} 0+100x20`,
			`couponsvc_issue_arrival_lag_seconds_bucket{namespace="coupon",pod="quick",le="0.256"} 0+100x20`,
			`couponsvc_issue_arrival_lag_seconds_bucket{namespace="coupon",pod="quick",le="+Inf"} 0+100x20`,
		},
		want: []string{"slow"},
	}, {
		alert: "CouponsvcPodNotReady", label: "pod",
		series: []string{
			`kube_pod_status_ready{namespace="coupon",pod="coupon-api-7d9f-a",condition="false"} 1x20`,
			`kube_pod_status_ready{namespace="coupon",pod="coupon-api-7d9f-b",condition="false"} 0x20`,
			`kube_pod_status_ready{namespace="coupon",pod="postgres-0",condition="false"} 1x20`,
		},
		want: []string{"coupon-api-7d9f-a"},
	}}
	for _, c := range cases {
		t.Run(c.alert, func(t *testing.T) {
			load := "load 15s\n  " + strings.Join(c.series, "\n  ") + "\n"
			if got := firing(t, load, alertExpr(t, c.alert), at, c.label); !slices.Equal(got, c.want) {
				t.Errorf("fires for %v, want %v", got, c.want)
			}
		})
	}
}
