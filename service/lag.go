package service

import (
	"sync/atomic"
	"time"
)

// lagWindow tracks the longest recent wait between a request's arrival at the host and its
// handling here: how far behind its crowd this process is running. The batch that sells a
// coupon out waits that long (see settle), so that every request that arrived before it has
// been handled and queued by arrival.
type lagWindow struct {
	start atomic.Int64 // current window's start, Unix ns
	cur   atomic.Int64 // longest lag in the current window, ns
	prev  atomic.Int64 // longest lag in the previous window, ns
}

// lagSpan is one window: the maximum covers the last one to two of them.
const lagSpan = 250 * time.Millisecond

func (w *lagWindow) observe(now time.Time, lag time.Duration) {
	n := now.UnixNano()
	if s := w.start.Load(); n-s > int64(lagSpan) && w.start.CompareAndSwap(s, n) {
		w.prev.Store(w.cur.Swap(0))
	}
	for {
		c := w.cur.Load()
		if int64(lag) <= c || w.cur.CompareAndSwap(c, int64(lag)) {
			return
		}
	}
}

// recent is the longest lag seen in the last one to two windows (none when idle since).
func (w *lagWindow) recent(now time.Time) time.Duration {
	if now.UnixNano()-w.start.Load() > 2*int64(lagSpan) {
		return 0
	}
	return time.Duration(max(w.cur.Load(), w.prev.Load()))
}

// maxSettle bounds the boundary settle: past it the process is so far behind that waiting
// longer would cost everyone in the batch more than arrival order gains.
const maxSettle = 50 * time.Millisecond

// settle is how long the batch that sells a coupon out waits before it is taken:
// BoundarySettle, or the longest recent arrival lag when that is longer, up to maxSettle.
func (s *Service) settle() time.Duration {
	if s.cfg.BoundarySettle <= 0 {
		return 0
	}
	return max(s.cfg.BoundarySettle, min(s.lag.recent(time.Now()), maxSettle))
}
