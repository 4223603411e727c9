package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// The coupon cache.
//
// Each instance knows every coupon: all are read again every MetaRefresh (the bound on
// staleness when a notice is lost), a change made on any instance is announced on the bus,
// and a code this instance does not know is asked of PostgreSQL only within a small budget
// (see state). The issue path reads a coupon's window from here, without a lock or a query.

// unknownLookups bounds the PostgreSQL lookups per second of coupon codes this instance does
// not know (see state).
const unknownLookups = 20

// window is a coupon's issuing window as this instance knows it; it is replaced whole, so the
// issue path reads it without a lock.
type window struct {
	opensAt  time.Time
	closesAt *time.Time
	paused   bool
}

func windowOf(c domain.Coupon) *window {
	return &window{opensAt: c.OpensAt, closesAt: c.ClosesAt, paused: c.Paused}
}

// check says whether a coupon may be issued at now: the window is [opensAt, closesAt).
func (w *window) check(now time.Time) error {
	switch {
	case now.Before(w.opensAt):
		return domain.ErrEventNotOpen
	case w.paused, w.closesAt != nil && !now.Before(*w.closesAt):
		return domain.ErrEventClosed
	}
	return nil
}

func newCouponState(c domain.Coupon) *couponState {
	st := &couponState{coupon: c, holders: map[uuid.UUID]struct{}{}, total: c.TotalQuantity,
		remaining: c.TotalQuantity - c.IssuedQuantity, more: make(chan struct{}, 1)}
	st.window.Store(windowOf(c))
	return st
}

// apply installs a fresh copy of the coupon read from PostgreSQL: its window and its stock. A
// changed stock starts a new generation, so that a sold-out fact learned from a batch of the
// old stock is not recorded; while PostgreSQL has stock left, the sold-out facts are dropped.
// Dropping them is always safe: the next request then asks PostgreSQL.
//
// A copy read before the last change this instance made or heard of (seen, from changes) is
// older than what it may have applied since, and is dropped: a refresh that read the coupon
// just before an admin reopened it must not close it again.
func (st *couponState) apply(c domain.Coupon, seen uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.changes.Load() != seen {
		return
	}
	st.window.Store(windowOf(c))
	st.remaining = c.TotalQuantity - c.IssuedQuantity
	if c.TotalQuantity != st.total {
		st.total = c.TotalQuantity
		st.gen++
	}
	if (st.soldOut || st.final) && c.IssuedQuantity < c.TotalQuantity {
		st.soldOut, st.final = false, false
		st.gen++
	}
}

func (s *Engine) state(ctx context.Context, code string) (*couponState, error) {
	if !domain.ValidCode(code) {
		return nil, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	if st := s.cached(code); st != nil {
		return st, nil
	}
	// This instance knows every coupon as of its last full read (refreshAll, at most
	// MetaRefresh old) and hears of new ones at once (the bus). An unknown code is asked of
	// PostgreSQL only within a small budget, for the coupon created a moment ago elsewhere;
	// beyond it, a flood of made-up codes is answered from memory.
	// Requests for one code share one lookup (and one unit of the budget).
	v, err, _ := s.loading.Do(code, func() (any, error) {
		if st := s.cached(code); st != nil {
			return st, nil
		}
		listed := time.Unix(0, s.listedAt.Load())
		if time.Since(listed) < 3*s.cfg.MetaRefresh && !s.lookups.Allow() {
			return nil, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
		}
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.TxTimeout)
		defer cancel()
		c, err := s.store.CouponByCode(lctx, code)
		if err != nil {
			return nil, Translate(err)
		}
		return s.add(c), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*couponState), nil
}

// cached returns the state of coupon code if this instance has one.
func (s *Engine) cached(code string) *couponState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.coupons[code]
}

// Known reports whether this instance knows coupon code (it has read or heard of it).
func (s *Engine) Known(code string) bool { return s.cached(code) != nil }

// Warm loads every coupon into the cache, so that the first crowd of a coupon does not wait on
// its load (the order of arrival is kept either way; see insertByArrival).
func (s *Engine) Warm(ctx context.Context) error { return s.refreshAll(ctx) }

// Run does the engine's background work until ctx ends: it listens for coupon changes made by
// other instances and the facts their batches committed, publishes this instance's facts, and
// refreshes the cached coupons every MetaRefresh (the bound on staleness when a notice is
// lost).
func (s *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if s.cfg.Bus != nil {
		wg.Go(func() {
			s.cfg.Bus.Subscribe(ctx, func(code string) {
				if st := s.cached(code); st != nil {
					s.reload(ctx, st)
				} else {
					s.learn(ctx, code)
				}
			})
		})
	}
	if s.cfg.Facts != nil {
		wg.Go(func() { s.cfg.Facts.Subscribe(ctx, func(msg string) { s.recordFacts(ctx, msg) }) })
		wg.Go(func() { s.publishLoop(ctx) })
	}
	wg.Go(func() {
		t := time.NewTicker(s.cfg.MetaRefresh)
		defer t.Stop()
		for {
			if err := s.refreshAll(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("refresh coupons", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	wg.Wait()
}

// reload reads one cached coupon again after a notice that it changed.
func (s *Engine) reload(ctx context.Context, st *couponState) {
	seen := st.changes.Add(1) // reads begun before the notice are older than this one
	s.changes.Add(1)
	c, err := s.store.CouponByCode(ctx, st.coupon.Code)
	if err != nil {
		s.log.Warn("reload changed coupon", "coupon", st.coupon.Code, "err", err)
		return
	}
	st.apply(c, seen)
}

// refreshAll reads every coupon again, in one query: it applies the changes to the cached ones
// and caches the new ones, so that this instance knows every coupon within MetaRefresh even
// when a notice is lost (and answers unknown codes without a query: see state).
func (s *Engine) refreshAll(ctx context.Context) error {
	s.mu.RLock()
	seen := make(map[string]uint64, len(s.coupons))
	for code, st := range s.coupons {
		seen[code] = st.changes.Load()
	}
	s.mu.RUnlock()
	started := time.Now()
	cs, err := s.store.ListCoupons(ctx)
	if err != nil {
		return Translate(err)
	}
	for _, c := range cs {
		if st := s.cached(c.Code); st != nil {
			if at, ok := seen[c.Code]; ok {
				st.apply(c, at)
			}
			continue
		}
		s.add(c)
	}
	s.listedAt.Store(started.UnixNano())
	return nil
}

// add caches coupon c unless it is cached already, and returns its state.
func (s *Engine) add(c domain.Coupon) *couponState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.coupons[c.Code]
	if st == nil {
		st = newCouponState(c)
		s.coupons[c.Code] = st
		s.changes.Add(1)
	}
	return st
}

// learn caches a coupon this instance heard of (a notice) but does not know yet: one created
// on another instance a moment ago.
func (s *Engine) learn(ctx context.Context, code string) {
	if !domain.ValidCode(code) {
		return
	}
	c, err := s.store.CouponByCode(ctx, code)
	if err != nil {
		if !errors.Is(err, domain.ErrCouponNotFound) {
			s.log.Warn("load new coupon", "coupon", code, "err", err)
		}
		return
	}
	s.add(c)
}

// Changed makes a coupon change committed by this instance visible: at once in this instance,
// and through the bus in the others (which also refresh by themselves within MetaRefresh
// should the notice be lost).
func (s *Engine) Changed(ctx context.Context, c domain.Coupon) {
	s.changes.Add(1)
	if st := s.cached(c.Code); st != nil {
		st.apply(c, st.changes.Add(1))
	} else {
		s.add(c)
	}
	if s.cfg.Bus == nil {
		return
	}
	if err := s.cfg.Bus.Publish(context.WithoutCancel(ctx), c.Code); err != nil {
		s.log.Warn("publish coupon change", "coupon", c.Code, "err", err)
	}
}
