// Package engine is couponsvc's issue engine: who batches a coupon's requests and how. It keeps
// each coupon's queue in arrival order, owns the coupon under its distributed lock or forwards
// the queue to the instance that does, issues the front of the queue in one transaction under
// the grant's fencing token (group commit across coupons), answers each request, and keeps the
// committed facts (holders, sold-out) that answer later requests without a transaction, sharing
// them with the other instances.
//
// It is a package of its own, beside service rather than inside it, because it is a layer of
// its own: service (the use cases: the Issue entry point, reads, admin, schedules, redemption)
// calls it, and internal/peer, which carries its batches between instances, needs its wire
// types without the use cases. It reaches PostgreSQL, the lock and the buses only through the
// small interfaces below (Store, Locker and Mutex, Bus, Peers), so that its unit tests run it
// against an in-memory store and lock, besides the tests against real servers.
//
// The coupon cache (each coupon's window and stock, refreshed every MetaRefresh and on a
// notice) lives here too: the engine's facts and its settle read and void it (a raised stock
// voids a sold-out), so the two cannot be kept apart without a lock between them.
package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"couponsvc/internal/metrics"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Store is what the engine needs from PostgreSQL (package repository implements it): the
// coupons, the batch issue statement, and the reads that decide a batch whose outcome was
// not heard.
type Store interface {
	CouponByCode(ctx context.Context, code string) (domain.Coupon, error)
	ListCoupons(ctx context.Context) ([]domain.Coupon, error)
	IssueBatches(ctx context.Context, batches []repository.Batch) []repository.BatchOutcome
	ResolveBatch(ctx context.Context, couponID uuid.UUID, users, wallets []uuid.UUID) ([]repository.Result, error)
	HoldersOf(ctx context.Context, couponID uuid.UUID) ([]uuid.UUID, error)
	UserWallet(ctx context.Context, userID uuid.UUID) ([]domain.WalletEntry, error)
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

// NewLocker presents a lock.Client as the engine's Locker.
func NewLocker(c *lock.Client) Locker { return locker{c} }

type locker struct{ c *lock.Client }

func (l locker) Mutex(name string) Mutex { return l.c.Mutex(name) }

func (l locker) AdvanceFence(ctx context.Context, name string, atLeast int64) error {
	return l.c.AdvanceFence(ctx, name, atLeast)
}

func (l locker) Ping(ctx context.Context) error { return l.c.Ping(ctx) }

// Bus carries short notices between the instances of the service: every instance, the
// publisher included, receives what any of them publishes. Delivery is best effort; the
// periodic refresh (Config.MetaRefresh) bounds what a lost notice costs.
type Bus interface {
	Publish(ctx context.Context, msg string) error
	// Subscribe calls handle for each notice until ctx ends, then returns.
	Subscribe(ctx context.Context, handle func(msg string))
}

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
	// Advertise is the address at which the other instances reach this one (the lock client's
	// holder info must name it: internal/peer.HolderInfo), and Peers carries requests to them; with Peers nil, this
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
	// Tracer traces the issue path (trace.go); nil: traces are off, and cost nothing.
	Tracer trace.Tracer
}

// Engine is one instance's issue engine.
type Engine struct {
	store   Store
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
	changes  atomic.Uint64           // see Changes
}

// Changes counts what may have changed the coupons' counts or settings, as far as this
// instance knows: its own batches, the facts it heard of others', coupon changes. A copy of the
// coupons read before the count moved may be out of date (the service's coupon reads).
func (s *Engine) Changes() uint64 { return s.changes.Load() }

// Lookup reports whether coupon code exists: from the cache, or from PostgreSQL within the
// budget of lookups of unknown codes (domain.ErrCouponNotFound beyond it or when it does not).
func (s *Engine) Lookup(ctx context.Context, code string) error {
	_, err := s.state(ctx, code)
	return err
}

// New returns an Engine; it registers the coupons' remaining stock in m's registry.
func New(store Store, locks Locker, cfg Config, m *metrics.Metrics, log *slog.Logger) *Engine {
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
	s := &Engine{store: store, locks: locks, cfg: cfg, metrics: m, log: log, coupons: map[string]*couponState{},
		id: uuid.NewString(), factsOut: make(chan string, factsBacklog), outboxes: map[string]*grouper[*outItem]{},
		lookups: rate.NewLimiter(unknownLookups, unknownLookups)}
	s.commits = &grouper[*commitRequest]{max: maxGroups, limit: maxGroupBatches, run: s.runGroup}
	if m != nil {
		m.Registry.MustRegister(stockCollector{s})
	}
	return s
}

// Translate turns the lock's and the fencing's errors into the domain's; any other error is
// returned as it is (the repository returns the domain's errors already).
func Translate(err error) error {
	switch {
	case errors.Is(err, lock.ErrUnavailable):
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	case errors.Is(err, lock.ErrTimeout), errors.Is(err, repository.ErrStaleFence), errors.Is(err, lock.ErrLockLost):
		return fmt.Errorf("%w: %w", domain.ErrLockTimeout, err)
	}
	return err
}

// Drain starts the shutdown of this instance's issuing: each coupon it owns is let go as soon
// as its queue is empty, and batches forwarded to it are refused, so the other instances take
// the coupons over while this one finishes what it has.
func (s *Engine) Drain() {
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
func (s *Engine) Drained(ctx context.Context) error {
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
