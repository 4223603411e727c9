// Package metrics holds couponsvc's Prometheus collectors, registered on a registry of their
// own (no global state), so several instances can run in one process in tests.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the service's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	// HTTPRequests counts answered requests by route template, method and status code.
	HTTPRequests *prometheus.CounterVec
	// HTTPDuration is the time to answer, by route template.
	HTTPDuration *prometheus.HistogramVec
	// IssueOutcomes counts issue answers by coupon code and result (issued, already_issued,
	// sold_out, lock_timeout, unavailable, not_found, ...).
	IssueOutcomes *prometheus.CounterVec
	// LockWait is the time spent acquiring a coupon's lock, whether or not it was acquired.
	LockWait prometheus.Histogram
	// LockHold is the time from grant to release.
	LockHold prometheus.Histogram
	// TxDuration is the time of the issue transaction in PostgreSQL.
	TxDuration prometheus.Histogram
	// ArrivalLag is the time from a request's arrival at the host (the kernel's receive
	// timestamp) to its issue handling: how long this process's crowd kept it waiting.
	ArrivalLag prometheus.Histogram
	// BatchSize is the number of requests issued in one transaction (group commit).
	BatchSize prometheus.Histogram
	// InFlight is the number of issue requests in progress in this instance.
	InFlight prometheus.Gauge
	// Redemptions counts redemption answers by result (redeemed, already_redeemed, expired,
	// not_owner, below_minimum, not_found, unavailable, error).
	Redemptions *prometheus.CounterVec
	// PeerBatches counts batches of issue requests sent to another instance, by kind (forward:
	// to the coupon's owner; relay: cut off from the Redis quorum, to any instance) and result
	// (ok, misdirected: the receiver does not own the coupon, error: not reached or no answer).
	PeerBatches *prometheus.CounterVec
	// CouponsMaterialised counts the daily coupons this instance created from schedules.
	CouponsMaterialised prometheus.Counter
	// AuthFailures counts the requests refused 401 in identity mode, by reason (missing,
	// malformed, algorithm, unknown_key, signature, expired, not_yet_valid, issuer, audience,
	// claims).
	AuthFailures *prometheus.CounterVec
}

// Buckets from 0.5 ms to ~8 s: the issue path's cheap answers take microseconds, a contended
// lock up to LOCK_WAIT (3 s by default).
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 15)

// New creates the collectors and registers them, with the Go runtime and process collectors,
// on a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "couponsvc_http_requests_total", Help: "HTTP requests answered, by route, method and status.",
		}, []string{"route", "method", "status"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "couponsvc_http_request_duration_seconds", Help: "Time to answer an HTTP request, by route.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		IssueOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "couponsvc_issue_total", Help: "Issue requests by coupon code and result.",
		}, []string{"coupon", "result"}),
		LockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "couponsvc_lock_wait_seconds", Help: "Time spent acquiring a coupon's distributed lock.",
			Buckets: latencyBuckets,
		}),
		LockHold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "couponsvc_lock_hold_seconds", Help: "Time a coupon's distributed lock was held.",
			Buckets: latencyBuckets,
		}),
		TxDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "couponsvc_issue_tx_seconds", Help: "Time of the issue transaction in PostgreSQL.",
			Buckets: latencyBuckets,
		}),
		ArrivalLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "couponsvc_issue_arrival_lag_seconds", Help: "Time from an issue request's arrival at the host to its handling.",
			Buckets: prometheus.ExponentialBuckets(0.0000625, 2, 15),
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "couponsvc_issue_batch_size", Help: "Requests decided in one issue transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "couponsvc_issue_inflight", Help: "Issue requests in progress in this instance.",
		}),
		Redemptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "couponsvc_redeem_total", Help: "Redemption requests by result.",
		}, []string{"result"}),
		PeerBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "couponsvc_peer_batches_total", Help: "Batches of issue requests sent to another instance, by kind and result.",
		}, []string{"kind", "result"}),
		CouponsMaterialised: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "couponsvc_schedule_coupons_created_total", Help: "Daily coupons this instance created from schedules.",
		}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "couponsvc_auth_failures_total", Help: "Requests refused 401 in identity mode, by reason.",
		}, []string{"reason"}),
	}
	m.Registry.MustRegister(m.HTTPRequests, m.HTTPDuration, m.IssueOutcomes, m.LockWait, m.LockHold,
		m.TxDuration, m.ArrivalLag, m.BatchSize, m.InFlight, m.Redemptions, m.PeerBatches, m.CouponsMaterialised, m.AuthFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
