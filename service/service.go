// Package service holds couponsvc's use cases: issuing a coupon first come first served under
// the coupon's distributed lock, and reading coupons and wallets. It knows the lock and the
// repository only through the small interfaces below.
package service

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"couponsvc/internal/metrics"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Repository is what the service needs from PostgreSQL.
type Repository interface {
	CouponByCode(ctx context.Context, code string) (domain.Coupon, error)
	ListCoupons(ctx context.Context) ([]domain.Coupon, error)
	IssueBatches(ctx context.Context, batches []repository.Batch) []repository.BatchOutcome
	ResolveBatch(ctx context.Context, couponID uuid.UUID, users, wallets []uuid.UUID) ([]repository.Result, error)
	HoldersOf(ctx context.Context, couponID uuid.UUID) ([]uuid.UUID, error)
	UserWallet(ctx context.Context, userID uuid.UUID) ([]domain.WalletEntry, error)
	Ping(ctx context.Context) error

	CreateCoupon(ctx context.Context, c domain.Coupon) (domain.Coupon, error)
	UpdateCoupon(ctx context.Context, code string, apply func(*domain.Coupon) error) (domain.Coupon, error)
	CouponsByCodes(ctx context.Context, codes []string) ([]domain.Coupon, error)
	CreateSchedule(ctx context.Context, s domain.Schedule) (domain.Schedule, error)
	ListSchedules(ctx context.Context) ([]domain.Schedule, error)
	ListAudit(ctx context.Context, limit int) ([]domain.AuditEntry, error)
	MaterialiseCoupon(ctx context.Context, c domain.Coupon, scheduleID uuid.UUID, day time.Time) (bool, error)
	Redeem(ctx context.Context, walletID, userID uuid.UUID, orderID string, orderAmount int64, now time.Time) (domain.Redemption, error)
}

// Mutex is one named distributed lock, held by the owner carried in the context.
type Mutex interface {
	TryLock(ctx context.Context, wait, lease time.Duration) error
	Unlock(ctx context.Context) error
	Fence(ctx context.Context) (int64, bool)
	Lost(ctx context.Context) <-chan struct{}
	// Holder returns the holder info of whoever holds the lock (the owner's address), and
	// whether a quorum of nodes agrees on it.
	Holder(ctx context.Context) (info string, agreed bool, err error)
}

// Locker hands out named mutexes over the Redis quorum.
type Locker interface {
	Mutex(name string) Mutex
	// AdvanceFence raises the lock's fencing counter to at least atLeast, after Redis lost
	// its state and PostgreSQL refused a token as stale.
	AdvanceFence(ctx context.Context, name string, atLeast int64) error
	// Ping reports whether a quorum of the Redis nodes answers.
	Ping(ctx context.Context) error
}

// NewLocker presents a lock.Client as the service's Locker.
func NewLocker(c *lock.Client) Locker { return locker{c} }

type locker struct{ c *lock.Client }

func (l locker) Mutex(name string) Mutex { return l.c.Mutex(name) }

func (l locker) AdvanceFence(ctx context.Context, name string, atLeast int64) error {
	return l.c.AdvanceFence(ctx, name, atLeast)
}

func (l locker) Ping(ctx context.Context) error { return l.c.Ping(ctx) }

// Config tunes the issue path.
type Config struct {
	LockWait  time.Duration // longest wait for a coupon's lock (LOCK_WAIT)
	LockLease time.Duration // 0: watchdog mode; >0: fixed lease (LOCK_LEASE)
	TxTimeout time.Duration // longest the issue transaction may take; 0 means 5 s
	MaxBatch  int           // most requests issued in one transaction; 0 means 512
	// BoundarySettle is the least time the batch that will sell a coupon out lets pass after
	// the arrival at its stock boundary before it is taken, so that requests that reached the
	// host earlier but are still on their way through this busy process join it in their
	// place; it waits longer, up to 50 ms, when requests recently waited longer than that to
	// be handled, or while this process still handles requests that arrived before the
	// boundary. 0 means 5 ms, negative no wait.
	BoundarySettle time.Duration

	// Now is the clock of the business rules (issuing windows, expiry, schedules); nil means
	// time.Now. Tests move it by the millisecond.
	Now func() time.Time
	// Advertise is the address at which the other instances reach this one (it must be the
	// lock client's holder info), and Peers carries requests to them; with Peers nil, this
	// instance forwards nothing and takes each coupon's lock for its own batches.
	Advertise string
	Peers     Peers
	// Bus carries coupon changes to the other instances; nil for a single instance.
	Bus Bus
	// Facts carries what each batch committed (holders, sold-out) to the other instances, so
	// that they answer those users without a transaction (see facts.go); nil for a single
	// instance.
	Facts Bus
	// MetaRefresh bounds how stale this instance's copy of a coupon (its window, pause and
	// stock) may be when a notice on the bus is lost; 0 means 1 s.
	MetaRefresh time.Duration
	// ScheduleEvery is how often the daily coupons due are materialised; 0 means 30 s.
	ScheduleEvery time.Duration
	// ScheduleLead is how long before its opening a daily coupon is created; 0 means 2 h, so
	// that with ScheduleEvery it exists well over an hour ahead.
	ScheduleLead time.Duration
}

// Service implements the use cases.
type Service struct {
	repo    Repository
	locks   Locker
	cfg     Config
	metrics *metrics.Metrics
	log     *slog.Logger

	id       string                   // this instance, on the facts bus
	factsOut chan string              // notices for the facts bus, published by Run
	lag      lagWindow                // recent arrival-to-handling waits
	handling frontier                 // how far back the arrivals being handled reach
	peers    peerSet                  // other instances seen, to relay to when cut off from the quorum
	draining atomic.Bool              // shutting down: owners let go of their coupons
	commits  *grouper[*commitRequest] // group commit of the coupons' batches
	drainers sync.WaitGroup
	outMu    sync.Mutex
	outboxes map[string]*grouper[*outItem] // by peer address: requests waiting to be forwarded

	mu       sync.RWMutex
	coupons  map[string]*couponState // by code; only coupons that exist
	listedAt atomic.Int64            // when the last read of every coupon began (Unix ns)
	lookups  *rate.Limiter           // PostgreSQL lookups of codes not in coupons
	loading  singleflight.Group      // lookups in flight, by code
	outcomes sync.Map                // [coupon, result] -> prometheus.Counter
}

// New returns a Service.
func New(repo Repository, locks Locker, cfg Config, m *metrics.Metrics, log *slog.Logger) *Service {
	if cfg.TxTimeout <= 0 {
		cfg.TxTimeout = 5 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 512
	}
	if cfg.BoundarySettle == 0 {
		cfg.BoundarySettle = 5 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MetaRefresh <= 0 {
		cfg.MetaRefresh = time.Second
	}
	if cfg.ScheduleEvery <= 0 {
		cfg.ScheduleEvery = 30 * time.Second
	}
	if cfg.ScheduleLead <= 0 {
		cfg.ScheduleLead = 2 * time.Hour
	}
	s := &Service{repo: repo, locks: locks, cfg: cfg, metrics: m, log: log, coupons: map[string]*couponState{},
		id: uuid.NewString(), factsOut: make(chan string, factsBacklog), outboxes: map[string]*grouper[*outItem]{},
		lookups: rate.NewLimiter(unknownLookups, unknownLookups)}
	s.commits = &grouper[*commitRequest]{max: maxGroups, limit: maxGroupBatches, run: s.runGroup}
	if m != nil {
		m.Registry.MustRegister(stockCollector{s})
	}
	return s
}

var codePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidCode reports whether code can name a coupon (the schema's CHECK); anything else cannot
// exist and is answered as not found without a query.
func ValidCode(code string) bool { return codePattern.MatchString(code) }

// ParseUserID parses a user id: a canonical (36-character, hyphenated) UUID other than the nil
// UUID.
func ParseUserID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, fmt.Errorf("%w: userId must be a UUID like 3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f", domain.ErrInvalid)
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: userId must be a UUID like 3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f", domain.ErrInvalid)
	}
	if id == uuid.Nil {
		return uuid.Nil, fmt.Errorf("%w: userId must not be the nil UUID", domain.ErrInvalid)
	}
	return id, nil
}

func (s *Service) state(ctx context.Context, code string) (*couponState, error) {
	if !ValidCode(code) {
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
		c, err := s.repo.CouponByCode(lctx, code)
		if err != nil {
			return nil, s.translate(err)
		}
		return s.add(c), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*couponState), nil
}

func newCouponState(c domain.Coupon) *couponState {
	st := &couponState{coupon: c, holders: map[uuid.UUID]struct{}{}, total: c.TotalQuantity,
		remaining: c.TotalQuantity - c.IssuedQuantity, more: make(chan struct{}, 1)}
	st.window.Store(windowOf(c))
	return st
}

// Warm loads every coupon into the cache, so that the first crowd of a coupon does not wait on
// its load (the order of arrival is kept either way; see insertByArrival).
func (s *Service) Warm(ctx context.Context) error { return s.refreshAll(ctx) }

// translate turns the lock's and the fencing's errors into the domain's: the repository returns
// the domain's errors already.
func (s *Service) translate(err error) error {
	switch {
	case errors.Is(err, lock.ErrUnavailable):
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	case errors.Is(err, lock.ErrTimeout), errors.Is(err, repository.ErrStaleFence), errors.Is(err, lock.ErrLockLost):
		return fmt.Errorf("%w: %w", domain.ErrLockTimeout, err)
	}
	return err
}

func (s *Service) now() time.Time { return s.cfg.Now() }

// unknownLookups bounds the PostgreSQL lookups per second of coupon codes this instance does
// not know (see state).
const unknownLookups = 20

// GetCoupon returns the coupon with its current counts.
func (s *Service) GetCoupon(ctx context.Context, code string) (domain.Coupon, error) {
	if !ValidCode(code) {
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	c, err := s.repo.CouponByCode(ctx, code)
	if err != nil {
		return domain.Coupon{}, s.translate(err)
	}
	return c, nil
}

// ListCoupons returns every coupon with its current counts.
func (s *Service) ListCoupons(ctx context.Context) ([]domain.Coupon, error) {
	cs, err := s.repo.ListCoupons(ctx)
	if err != nil {
		return nil, s.translate(err)
	}
	return cs, nil
}

// UserWallet returns the user's wallet entries with the given status (WalletAll: every one).
func (s *Service) UserWallet(ctx context.Context, userID uuid.UUID, status WalletStatus) ([]domain.WalletEntry, error) {
	w, err := s.repo.UserWallet(ctx, userID)
	if err != nil {
		return nil, s.translate(err)
	}
	if status == WalletAll {
		return w, nil
	}
	now := s.now()
	out := w[:0]
	for _, e := range w {
		if statusOf(e, now) == status {
			out = append(out, e)
		}
	}
	return out, nil
}

// Drain starts the shutdown of this instance's issuing: each coupon it owns is let go as soon
// as its queue is empty, and batches forwarded to it are refused, so the other instances take
// the coupons over while this one finishes what it has.
func (s *Service) Drain() {
	s.draining.Store(true)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, st := range s.coupons {
		select {
		case st.more <- struct{}{}:
		default:
		}
	}
}

// Drained waits until every coupon's queue is served and its lock released (after Drain and
// the HTTP server's shutdown, so that no request comes in meanwhile), or ctx ends. The lock
// client can then close without leaving a lock to its lease.
func (s *Service) Drained(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.drainers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports whether PostgreSQL and a quorum of the Redis nodes answer.
func (s *Service) Ready(ctx context.Context) error {
	if err := s.repo.Ping(ctx); err != nil {
		return s.translate(err)
	}
	if err := s.locks.Ping(ctx); err != nil {
		return fmt.Errorf("%w: redis: %w", domain.ErrUnavailable, err)
	}
	return nil
}
