// Package service holds couponsvc's use cases: issuing a coupon first come first served under
// the coupon's distributed lock, and reading coupons and wallets. It knows the lock and the
// repository only through the small interfaces below.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"couponsvc/internal/metrics"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/google/uuid"
)

// Errors returned by the service; the HTTP layer maps each to a status and error code.
var (
	ErrInvalid        = errors.New("invalid request")
	ErrCouponNotFound = errors.New("coupon not found")
	ErrAlreadyIssued  = errors.New("coupon already issued to this user")
	ErrSoldOut        = errors.New("coupon sold out")
	ErrLockTimeout    = errors.New("coupon lock not acquired in time")
	ErrUnavailable    = errors.New("a backing store is unreachable")
)

// Coupon and WalletEntry are the repository's records; the service adds no fields.
type (
	Coupon      = repository.Coupon
	WalletEntry = repository.WalletEntry
)

// Repository is what the service needs from PostgreSQL.
type Repository interface {
	CouponByCode(ctx context.Context, code string) (repository.Coupon, error)
	ListCoupons(ctx context.Context) ([]repository.Coupon, error)
	Issue(ctx context.Context, couponID, userID uuid.UUID, fence int64) (repository.WalletEntry, error)
	UserWallet(ctx context.Context, userID uuid.UUID) ([]repository.WalletEntry, error)
	Ping(ctx context.Context) error
}

// Mutex is one named distributed lock, held by the owner carried in the context.
type Mutex interface {
	TryLock(ctx context.Context, wait, lease time.Duration) error
	Unlock(ctx context.Context) error
	Fence(ctx context.Context) (int64, bool)
	Lost(ctx context.Context) <-chan struct{}
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

// Config tunes the issue path.
type Config struct {
	LockWait  time.Duration // longest wait for a coupon's lock (LOCK_WAIT)
	LockLease time.Duration // 0: watchdog mode; >0: fixed lease (LOCK_LEASE)
	TxTimeout time.Duration // longest the issue transaction may take; 0 means 5 s
}

// Service implements the use cases.
type Service struct {
	repo    Repository
	locks   Locker
	cfg     Config
	metrics *metrics.Metrics
	log     *slog.Logger

	mu      sync.RWMutex
	coupons map[string]*couponState // by code; only coupons that exist
}

// couponState caches what never changes about a coupon, plus facts learned only after
// PostgreSQL committed them, so that a cached answer is faster but never different.
type couponState struct {
	coupon Coupon // ID, code, name and discount; quantities here are not kept current

	mu      sync.Mutex
	soldOut bool                   // issued_quantity reached total_quantity (stock never shrinks)
	holders map[uuid.UUID]struct{} // users known to hold this coupon
}

// New returns a Service.
func New(repo Repository, locks Locker, cfg Config, m *metrics.Metrics, log *slog.Logger) *Service {
	if cfg.TxTimeout <= 0 {
		cfg.TxTimeout = 5 * time.Second
	}
	return &Service{repo: repo, locks: locks, cfg: cfg, metrics: m, log: log, coupons: map[string]*couponState{}}
}

var codePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidCode reports whether code can name a coupon (the schema's CHECK); anything else cannot
// exist and is answered as not found without a query.
func ValidCode(code string) bool { return codePattern.MatchString(code) }

// ParseUserID parses a user id: a canonical (36-character, hyphenated) UUID other than the nil
// UUID.
func ParseUserID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, fmt.Errorf("%w: userId must be a UUID like 3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f", ErrInvalid)
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: userId must be a UUID like 3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f", ErrInvalid)
	}
	if id == uuid.Nil {
		return uuid.Nil, fmt.Errorf("%w: userId must not be the nil UUID", ErrInvalid)
	}
	return id, nil
}

func (s *Service) state(ctx context.Context, code string) (*couponState, error) {
	if !ValidCode(code) {
		return nil, fmt.Errorf("coupon %q: %w", code, ErrCouponNotFound)
	}
	s.mu.RLock()
	st := s.coupons[code]
	s.mu.RUnlock()
	if st != nil {
		return st, nil
	}
	c, err := s.repo.CouponByCode(ctx, code)
	if err != nil {
		return nil, s.translate(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st = s.coupons[code]; st == nil {
		st = &couponState{coupon: c, holders: map[uuid.UUID]struct{}{}}
		s.coupons[code] = st
	}
	return st, nil
}

// translate maps repository and lock errors to the service's.
func (s *Service) translate(err error) error {
	switch {
	case errors.Is(err, repository.ErrCouponNotFound):
		return fmt.Errorf("%w: %w", ErrCouponNotFound, err)
	case errors.Is(err, repository.ErrAlreadyIssued):
		return fmt.Errorf("%w: %w", ErrAlreadyIssued, err)
	case errors.Is(err, repository.ErrSoldOut):
		return fmt.Errorf("%w: %w", ErrSoldOut, err)
	case errors.Is(err, repository.ErrUnavailable), errors.Is(err, lock.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.Is(err, lock.ErrTimeout), errors.Is(err, repository.ErrStaleFence), errors.Is(err, lock.ErrLockLost):
		return fmt.Errorf("%w: %w", ErrLockTimeout, err)
	}
	return err
}

// Issue issues coupon code to userID, first come first served: a committed wallet entry, or
// ErrCouponNotFound, ErrAlreadyIssued, ErrSoldOut, ErrLockTimeout or ErrUnavailable, in which
// case nothing was issued.
func (s *Service) Issue(ctx context.Context, code string, userID uuid.UUID) (WalletEntry, error) {
	start := time.Now()
	e, err := s.issue(ctx, code, userID)
	result := resultOf(err)
	label := code
	if errors.Is(err, ErrCouponNotFound) {
		label = "_unknown" // random codes must not grow the metric's label set
	}
	s.metrics.IssueOutcomes.WithLabelValues(label, result).Inc()
	switch result {
	case "error":
		s.log.ErrorContext(ctx, "issue failed", "coupon", code, "user", userID, "err", err)
	case "unavailable":
		s.log.WarnContext(ctx, "issue unavailable", "coupon", code, "user", userID, "err", err)
	default:
		s.log.DebugContext(ctx, "issue", "coupon", code, "user", userID, "result", result,
			"duration_ms", float64(time.Since(start).Microseconds())/1000)
	}
	return e, err
}

func resultOf(err error) string {
	switch {
	case err == nil:
		return "issued"
	case errors.Is(err, ErrAlreadyIssued):
		return "already_issued"
	case errors.Is(err, ErrSoldOut):
		return "sold_out"
	case errors.Is(err, ErrCouponNotFound):
		return "not_found"
	case errors.Is(err, ErrLockTimeout):
		return "lock_timeout"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

func (s *Service) issue(ctx context.Context, code string, userID uuid.UUID) (WalletEntry, error) {
	st, err := s.state(ctx, code)
	if err != nil {
		return WalletEntry{}, err
	}
	// Cheap answers first, from facts PostgreSQL committed: no lock, no round trip.
	st.mu.Lock()
	_, held := st.holders[userID]
	soldOut := st.soldOut
	st.mu.Unlock()
	if held {
		return WalletEntry{}, fmt.Errorf("issue %s: %w", code, ErrAlreadyIssued)
	}
	if soldOut {
		return WalletEntry{}, fmt.Errorf("issue %s: %w", code, ErrSoldOut)
	}

	e, err := s.issueLocked(ctx, st, userID)
	if errors.Is(err, repository.ErrStaleFence) {
		// PostgreSQL accepted a newer grant than ours: either our lock was lost, or Redis
		// lost its fencing counters (nodes restarted empty). Raise the counter to what
		// PostgreSQL holds and try once more with a fresh grant.
		if c, cerr := s.repo.CouponByCode(ctx, code); cerr == nil {
			if aerr := s.locks.AdvanceFence(ctx, lockName(code), c.FenceToken); aerr != nil {
				s.log.WarnContext(ctx, "advance fence", "coupon", code, "err", aerr)
			}
		}
		e, err = s.issueLocked(ctx, st, userID)
	}
	switch {
	case err == nil:
		st.mu.Lock()
		st.holders[userID] = struct{}{}
		st.mu.Unlock()
		e.CouponCode, e.DiscountAmount = st.coupon.Code, st.coupon.DiscountAmount
		return e, nil
	case errors.Is(err, repository.ErrAlreadyIssued):
		st.mu.Lock()
		st.holders[userID] = struct{}{}
		st.mu.Unlock()
	case errors.Is(err, repository.ErrSoldOut):
		st.mu.Lock()
		st.soldOut = true
		st.mu.Unlock()
	}
	return WalletEntry{}, fmt.Errorf("issue %s: %w", code, s.translate(err))
}

func lockName(code string) string { return "coupon:" + code }

// issueLocked takes the coupon's lock, runs the issue transaction under it with the grant's
// fencing token, and releases the lock.
func (s *Service) issueLocked(ctx context.Context, st *couponState, userID uuid.UUID) (WalletEntry, error) {
	name := lockName(st.coupon.Code)
	m := s.locks.Mutex(name)
	ctx = lock.WithOwner(ctx, lock.NewOwner())

	waitStart := time.Now()
	err := m.TryLock(ctx, s.cfg.LockWait, s.cfg.LockLease)
	s.metrics.LockWait.Observe(time.Since(waitStart).Seconds())
	if err != nil {
		return WalletEntry{}, fmt.Errorf("lock %s: %w", name, err)
	}
	held := time.Now()
	defer func() {
		// Release even when the client has gone: a held lock would stall everyone else
		// until its lease ran out.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := m.Unlock(uctx); err != nil {
			s.log.WarnContext(ctx, "unlock", "lock", name, "err", err)
		}
		s.metrics.LockHold.Observe(time.Since(held).Seconds())
	}()
	fence, _ := m.Fence(ctx)

	// The transaction stops the moment the lock is known lost; the fencing token and the
	// constraints guard the moments before that is known.
	txCtx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout)
	defer cancel()
	lost := m.Lost(ctx)
	go func() {
		select {
		case <-lost:
			cancel()
		case <-txCtx.Done():
		}
	}()
	txStart := time.Now()
	e, err := s.repo.Issue(txCtx, st.coupon.ID, userID, fence)
	s.metrics.TxDuration.Observe(time.Since(txStart).Seconds())
	if err != nil && txCtx.Err() != nil && ctx.Err() == nil {
		select {
		case <-lost:
			return WalletEntry{}, fmt.Errorf("lock %s lost during the transaction: %w", name, lock.ErrLockLost)
		default:
			return WalletEntry{}, fmt.Errorf("issue transaction: %w: %w", repository.ErrUnavailable, err)
		}
	}
	return e, err
}

// GetCoupon returns the coupon with its current counts.
func (s *Service) GetCoupon(ctx context.Context, code string) (Coupon, error) {
	if !ValidCode(code) {
		return Coupon{}, fmt.Errorf("coupon %q: %w", code, ErrCouponNotFound)
	}
	c, err := s.repo.CouponByCode(ctx, code)
	if err != nil {
		return Coupon{}, s.translate(err)
	}
	return c, nil
}

// ListCoupons returns every coupon with its current counts.
func (s *Service) ListCoupons(ctx context.Context) ([]Coupon, error) {
	cs, err := s.repo.ListCoupons(ctx)
	if err != nil {
		return nil, s.translate(err)
	}
	return cs, nil
}

// UserWallet returns the user's wallet entries.
func (s *Service) UserWallet(ctx context.Context, userID uuid.UUID) ([]WalletEntry, error) {
	w, err := s.repo.UserWallet(ctx, userID)
	if err != nil {
		return nil, s.translate(err)
	}
	return w, nil
}

// Ready reports whether PostgreSQL and a quorum of the Redis nodes answer.
func (s *Service) Ready(ctx context.Context) error {
	if err := s.repo.Ping(ctx); err != nil {
		return s.translate(err)
	}
	if err := s.locks.Ping(ctx); err != nil {
		return fmt.Errorf("%w: redis: %w", ErrUnavailable, err)
	}
	return nil
}
