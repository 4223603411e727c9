package engine

import (
	"math"
	"sync/atomic"
	"time"
)

// lagWindow tracks the recent waits between a request's arrival at the host and its handling
// here: how far behind its crowd this process is running. The batch that sells a coupon out
// is taken only once its boundary arrival is older than nearly all of them (see settle), so
// that the requests that arrived before the boundary have been handled and queued by arrival.
//
// It keeps a histogram of the current window and of the previous one, in buckets a factor of
// √2 apart from 62.5 µs up, with atomic counters: observing costs a few atomic operations.
type lagWindow struct {
	start  atomic.Int64 // current window's start, Unix ns
	cur    atomic.Int32 // which of counts is the current window (0 or 1)
	counts [2][lagBuckets]atomic.Uint32
}

const (
	// lagSpan is one window: the percentile covers the last one to two of them.
	lagSpan    = 250 * time.Millisecond
	lagBuckets = 40 // up to 62.5 µs × √2^39, over 40 s
	lagFirst   = 62500 * time.Nanosecond
	// lagQuantile is the share of recent requests handled within the settle.
	lagQuantile = 0.999
)

// lagBucket is the bucket of lag d: bucket i holds lags up to lagBound(i).
func lagBucket(d time.Duration) int {
	if d <= lagFirst {
		return 0
	}
	i := int(math.Ceil(2 * math.Log2(float64(d)/float64(lagFirst))))
	return min(i, lagBuckets-1)
}

func lagBound(i int) time.Duration {
	return time.Duration(float64(lagFirst) * math.Pow(2, float64(i)/2))
}

func (w *lagWindow) observe(now time.Time, lag time.Duration) {
	n := now.UnixNano()
	if s := w.start.Load(); n-s > int64(lagSpan) && w.start.CompareAndSwap(s, n) {
		// The previous window's buckets become the current one's, emptied.
		next := 1 - w.cur.Load()
		for i := range w.counts[next] {
			w.counts[next][i].Store(0)
		}
		w.cur.Store(next)
	}
	w.counts[w.cur.Load()][lagBucket(lag)].Add(1)
}

// recent is the lagQuantile of the lags seen in the last one to two windows (0 when idle
// since), rounded up to its bucket's bound.
func (w *lagWindow) recent(now time.Time) time.Duration {
	if now.UnixNano()-w.start.Load() > 2*int64(lagSpan) {
		return 0
	}
	var counts [lagBuckets]uint64
	var total uint64
	for k := range w.counts {
		for i := range counts {
			c := uint64(w.counts[k][i].Load())
			counts[i] += c
			total += c
		}
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(lagQuantile * float64(total)))
	var seen uint64
	for i, c := range counts {
		if seen += c; seen >= want {
			return lagBound(i)
		}
	}
	return lagBound(lagBuckets - 1)
}

// frontier records, for each millisecond of handling, the earliest arrival at the host among
// the requests handled in it: how far back this process's handling still reaches. Under a
// crowd requests wait milliseconds for the CPUs, not strictly in arrival order; while requests
// that arrived before some moment are still being handled, others like them may still be on
// their way. Observing costs two or three atomic operations.
type frontier struct {
	slots [64]struct {
		ms       atomic.Int64 // the millisecond (Unix) the slot holds
		earliest atomic.Int64 // earliest arrival handled in it, Unix ns
	}
}

func (f *frontier) observe(now, arrived time.Time) {
	ms := now.UnixMilli()
	sl := &f.slots[ms&63]
	if sl.ms.Load() != ms {
		// A new millisecond; two requests racing here may lose one observation, which only
		// shortens one settle by a millisecond.
		sl.earliest.Store(math.MaxInt64)
		sl.ms.Store(ms)
	}
	a := arrived.UnixNano()
	for {
		e := sl.earliest.Load()
		if a >= e || sl.earliest.CompareAndSwap(e, a) {
			return
		}
	}
}

// past reports whether, in the last whole millisecond before now, nothing that arrived
// before t was handled.
func (f *frontier) past(t, now time.Time) bool {
	ms := now.UnixMilli() - 1
	sl := &f.slots[ms&63]
	return sl.ms.Load() != ms || sl.earliest.Load() > t.UnixNano()
}

// observeArrival records a request handled at now that reached the host at arrived.
func (s *Engine) observeArrival(now, arrived time.Time) {
	lag := now.Sub(arrived)
	s.lag.observe(now, lag)
	s.handling.observe(now, arrived)
	s.metrics.ArrivalLag.Observe(lag.Seconds())
}

// maxSettle bounds the boundary settle: past it the process is so far behind that waiting
// longer would cost everyone in the batch more than arrival order gains.
const maxSettle = 50 * time.Millisecond

// settle waits before the batch that sells a coupon out is taken, so that requests that
// arrived before its stock boundary (the remaining-th request in the queue) but are still on
// their way through this process take their place by arrival first: until the boundary
// arrival is older than nearly all recent arrival-to-handling waits (at least BoundarySettle),
// and longer while this process is still handling requests that arrived before it (a crowd's
// first burst, which the recent waits do not show yet); at most maxSettle, or BoundarySettle
// if longer. st.mu is held, and released while waiting.
func (s *Engine) settle(st *couponState) {
	if s.cfg.BoundarySettle <= 0 || st.remaining <= 0 || len(st.queue) < st.remaining {
		return
	}
	start, limit := time.Now(), max(s.cfg.BoundarySettle, maxSettle)
	age := max(s.cfg.BoundarySettle, min(s.lag.recent(start), maxSettle))
	for {
		// The queue and the remaining stock may have changed while st.mu was released (another
		// instance's facts, requests that left): re-check that a boundary still exists.
		if st.remaining <= 0 || len(st.queue) < st.remaining {
			return
		}
		now := time.Now()
		boundary := st.queue[st.remaining-1].arrived // earlier arrivals may have moved it
		if now.Sub(start) >= limit || (now.Sub(boundary) >= age && s.handling.past(boundary, now)) {
			return
		}
		st.mu.Unlock()
		time.Sleep(time.Millisecond)
		st.mu.Lock()
	}
}
