package service

import (
	"couponsvc/domain"
	"errors"

	"context"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// DefaultValidDays is how long a wallet entry stays valid when a coupon does not say.
const DefaultValidDays = 30

// Bus carries short notices between the instances of the service: every instance, the
// publisher included, receives what any of them publishes. Delivery is best effort; the
// periodic refresh (Config.MetaRefresh) bounds what a lost notice costs.
type Bus interface {
	Publish(ctx context.Context, msg string) error
	// Subscribe calls handle for each notice until ctx ends, then returns.
	Subscribe(ctx context.Context, handle func(msg string))
}

// Limits of admin input: beyond them a value is a typo, and PostgreSQL's int columns end at 2^31.
const (
	maxQuantity   = 100_000_000
	maxAmount     = 1_000_000_000_000_000 // 10^18, within int64
	maxValidDays  = 3650
	maxNameLength = 200
)

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

// cached returns the state of coupon code if this instance has one.
func (s *Service) cached(code string) *couponState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.coupons[code]
}

// Run does the service's background work until ctx ends: it listens for coupon changes made by
// other instances and the facts their batches committed, refreshes the cached coupons every MetaRefresh (the bound on staleness when
// a notice is lost) and materialises the daily coupons of the schedules every ScheduleEvery.
func (s *Service) Run(ctx context.Context) {
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
		every(ctx, s.cfg.MetaRefresh, func(ctx context.Context) {
			if err := s.refreshAll(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("refresh coupons", "err", err)
			}
		})
	})
	wg.Go(func() { every(ctx, s.cfg.ScheduleEvery, s.MaterialiseSchedules) })
	wg.Wait()
}

// every calls fn at once and then every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reload reads one cached coupon again after a notice that it changed.
func (s *Service) reload(ctx context.Context, st *couponState) {
	seen := st.changes.Add(1) // reads begun before the notice are older than this one
	c, err := s.repo.CouponByCode(ctx, st.coupon.Code)
	if err != nil {
		s.log.Warn("reload changed coupon", "coupon", st.coupon.Code, "err", err)
		return
	}
	st.apply(c, seen)
}

// refreshAll reads every coupon again, in one query: it applies the changes to the cached ones
// and caches the new ones, so that this instance knows every coupon within MetaRefresh even
// when a notice is lost (and answers unknown codes without a query: see state).
func (s *Service) refreshAll(ctx context.Context) error {
	s.mu.RLock()
	seen := make(map[string]uint64, len(s.coupons))
	for code, st := range s.coupons {
		seen[code] = st.changes.Load()
	}
	s.mu.RUnlock()
	started := time.Now()
	cs, err := s.repo.ListCoupons(ctx)
	if err != nil {
		return s.translate(err)
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
func (s *Service) add(c domain.Coupon) *couponState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.coupons[c.Code]
	if st == nil {
		st = newCouponState(c)
		s.coupons[c.Code] = st
	}
	return st
}

// learn caches a coupon this instance heard of (a notice) but does not know yet: one created
// on another instance a moment ago.
func (s *Service) learn(ctx context.Context, code string) {
	if !ValidCode(code) {
		return
	}
	c, err := s.repo.CouponByCode(ctx, code)
	if err != nil {
		if !errors.Is(err, domain.ErrCouponNotFound) {
			s.log.Warn("load new coupon", "coupon", code, "err", err)
		}
		return
	}
	s.add(c)
}

// changed makes a coupon change visible: at once in this instance, and through the bus in the
// others (which also refresh by themselves within MetaRefresh should the notice be lost).
func (s *Service) changed(ctx context.Context, c domain.Coupon) {
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

// CreateCoupon creates a coupon. A zero OpensAt opens it now.
func (s *Service) CreateCoupon(ctx context.Context, c domain.Coupon) (domain.Coupon, error) {
	if c.OpensAt.IsZero() {
		c.OpensAt = s.now()
	}
	if err := validateCoupon(c); err != nil {
		return domain.Coupon{}, err
	}
	out, err := s.repo.CreateCoupon(ctx, domain.Coupon{Code: c.Code, Name: c.Name, DiscountAmount: c.DiscountAmount,
		TotalQuantity: c.TotalQuantity, OpensAt: c.OpensAt, ClosesAt: c.ClosesAt, ValidDays: c.ValidDays,
		MinOrderAmount: c.MinOrderAmount})
	if err != nil {
		return domain.Coupon{}, s.translate(err)
	}
	s.log.Info("coupon created", "coupon", out.Code, "total", out.TotalQuantity, "opens_at", out.OpensAt)
	return out, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{domain.ErrInvalid}, args...)...)
}

func validateCoupon(c domain.Coupon) error {
	switch {
	case !ValidCode(c.Code):
		return invalid("code must be 1 to 64 letters, digits, '-' or '_'")
	case c.Name == "" || utf8.RuneCountInString(c.Name) > maxNameLength || !utf8.ValidString(c.Name):
		return invalid("name must be 1 to %d characters", maxNameLength)
	case c.DiscountAmount < 0 || c.DiscountAmount > maxAmount:
		return invalid("discountAmount must be between 0 and %d", int64(maxAmount))
	case c.TotalQuantity < 0 || c.TotalQuantity > maxQuantity:
		return invalid("totalQuantity must be between 0 and %d", maxQuantity)
	case c.ValidDays < 1 || c.ValidDays > maxValidDays:
		return invalid("validDays must be between 1 and %d", maxValidDays)
	case c.MinOrderAmount < 0 || c.MinOrderAmount > maxAmount:
		return invalid("minOrderAmount must be between 0 and %d", int64(maxAmount))
	}
	return validateWindow(c.OpensAt, c.ClosesAt)
}

func validateWindow(opensAt time.Time, closesAt *time.Time) error {
	if closesAt != nil && !closesAt.After(opensAt) {
		return invalid("closesAt must be after opensAt")
	}
	return nil
}

// CouponPatch lists the changes to a coupon; nil fields stay as they are.
type CouponPatch struct {
	Paused        *bool
	OpensAt       *time.Time
	SetClosesAt   bool       // change the end of the window to ClosesAt
	ClosesAt      *time.Time // nil (with SetClosesAt): no end
	TotalQuantity *int
}

// UpdateCoupon pauses or resumes a coupon, moves its window or changes its stock, never below
// what was issued (domain.ErrStockBelowIssued). The change locks the coupon's row in PostgreSQL, as
// every issue batch does, so it falls between two batches and never races with issuance; it
// does not take the coupon's distributed lock, which the coupon's owner keeps for as long as a
// crowd lasts. Every instance sees the change within moments (the bus), and within MetaRefresh
// at the latest; a batch's sold-out finding from before a stock change is void (generations).
func (s *Service) UpdateCoupon(ctx context.Context, code string, p CouponPatch) (domain.Coupon, error) {
	if !ValidCode(code) {
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	if p.TotalQuantity != nil && (*p.TotalQuantity < 0 || *p.TotalQuantity > maxQuantity) {
		return domain.Coupon{}, invalid("totalQuantity must be between 0 and %d", maxQuantity)
	}
	c, err := s.repo.UpdateCoupon(ctx, code, func(c *domain.Coupon) error {
		if p.Paused != nil {
			c.Paused = *p.Paused
		}
		if p.OpensAt != nil {
			c.OpensAt = *p.OpensAt
		}
		if p.SetClosesAt {
			c.ClosesAt = p.ClosesAt
		}
		if p.TotalQuantity != nil {
			if *p.TotalQuantity < c.IssuedQuantity {
				return fmt.Errorf("%w: %d issued, asked for %d", domain.ErrStockBelowIssued, c.IssuedQuantity, *p.TotalQuantity)
			}
			c.TotalQuantity = *p.TotalQuantity
		}
		return validateWindow(c.OpensAt, c.ClosesAt)
	})
	if err != nil {
		return domain.Coupon{}, s.translate(err)
	}
	s.changed(ctx, c)
	s.log.Info("coupon updated", "coupon", c.Code, "paused", c.Paused, "opens_at", c.OpensAt,
		"closes_at", c.ClosesAt, "total", c.TotalQuantity, "issued", c.IssuedQuantity)
	return c, nil
}

// Bounds of an audit listing: the default and the largest number of entries returned at once.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// ListAudit returns the newest limit (1 to MaxAuditLimit) admin changes, newest first.
func (s *Service) ListAudit(ctx context.Context, limit int) ([]domain.AuditEntry, error) {
	if limit < 1 || limit > MaxAuditLimit {
		return nil, invalid("limit must be between 1 and %d", MaxAuditLimit)
	}
	out, err := s.repo.ListAudit(ctx, limit)
	if err != nil {
		return nil, s.translate(err)
	}
	return out, nil
}
