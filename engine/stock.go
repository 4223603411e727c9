package engine

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// stockShownAfterClose is how long a closed coupon's stock stays in /metrics: long enough for a
// dashboard to show how an event ended, short enough that months of daily coupons do not pile up
// as series.
const stockShownAfterClose = time.Hour

var remainingDesc = prometheus.NewDesc("couponsvc_coupon_remaining",
	"Stock left per coupon as this instance knows it (read from PostgreSQL every MetaRefresh, lowered by its own batches); the lowest over instances is the freshest.",
	[]string{"coupon"}, nil)

// stockCollector exposes each cached coupon's remaining stock at scrape time: nothing is added to
// the issue path, and the figure is the one the boundary settle already keeps.
type stockCollector struct{ s *Engine }

func (c stockCollector) Describe(ch chan<- *prometheus.Desc) { ch <- remainingDesc }

func (c stockCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.s.cfg.Now()
	c.s.mu.RLock()
	states := make(map[string]*couponState, len(c.s.coupons))
	for code, st := range c.s.coupons {
		states[code] = st
	}
	c.s.mu.RUnlock()
	for code, st := range states {
		if w := st.window.Load(); w != nil && w.closesAt != nil && now.Sub(*w.closesAt) > stockShownAfterClose {
			continue
		}
		st.mu.Lock()
		remaining := max(st.remaining, 0)
		st.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(remainingDesc, prometheus.GaugeValue, float64(remaining), code)
	}
}
