// Package service holds couponsvc's use cases: issuing a coupon first come first served (the
// Issue entry point over the issue engine, package engine), reading coupons and wallets, the
// admin operations, daily schedules and redemption. It reaches PostgreSQL through the
// Repository interface below, and issues through the engine.
package service

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"couponsvc/engine"
	"couponsvc/internal/metrics"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"
)

// Repository is what the service needs from PostgreSQL: what the issue engine needs, and the
// reads and writes of the other use cases.
type Repository interface {
	engine.Store
	Ping(ctx context.Context) error

	CreateCoupon(ctx context.Context, c domain.Coupon) (domain.Coupon, error)
	UpdateCoupon(ctx context.Context, code string, apply func(*domain.Coupon) error) (domain.Coupon, error)
	CouponsByCodes(ctx context.Context, codes []string) ([]domain.Coupon, error)
	CreateSchedule(ctx context.Context, s domain.Schedule) (domain.Schedule, error)
	ListSchedules(ctx context.Context) ([]domain.Schedule, error)
	ListAudit(ctx context.Context, limit int) ([]domain.AuditEntry, error)
	MaterialiseCoupon(ctx context.Context, c domain.Coupon, scheduleID uuid.UUID, day time.Time) (bool, error)
	Redeem(ctx context.Context, walletID, userID uuid.UUID, orderID string, orderAmount int64) (domain.Redemption, error)
}

// Config tunes the use cases.
type Config struct {
	// Engine tunes the issue path; its Now is the clock of every business rule (issuing
	// windows, expiry, schedules).
	Engine engine.Config
	// ReadConns bounds the PostgreSQL connections the user reads (coupons, wallets) take at
	// once, so that the rest of the pool is the issue batches' whatever the readers do; 0
	// means 8. Reads beyond it wait for a slot.
	ReadConns int
	// ScheduleEvery is how often the daily coupons due are materialised; 0 means 30 s.
	ScheduleEvery time.Duration
	// ScheduleLead is how long before its opening a daily coupon is created; 0 means 2 h, so
	// that with ScheduleEvery it exists well over an hour ahead.
	ScheduleLead time.Duration
}

// Service implements the use cases.
type Service struct {
	repo     Repository
	locks    engine.Locker
	engine   *engine.Engine
	cfg      Config
	metrics  *metrics.Metrics
	log      *slog.Logger
	outcomes sync.Map // [coupon, result] -> prometheus.Counter

	reads      atomic.Pointer[readSnapshot] // the coupon reads' snapshot (read.go)
	readFlight singleflight.Group           // the snapshot's query in flight
	readSlots  chan struct{}                // a slot per user read querying PostgreSQL (ReadConns)
}

// New returns a Service, with its issue engine.
func New(repo Repository, locks engine.Locker, cfg Config, m *metrics.Metrics, log *slog.Logger) *Service {
	if cfg.Engine.Now == nil {
		cfg.Engine.Now = time.Now
	}
	if cfg.Engine.MetaRefresh <= 0 {
		cfg.Engine.MetaRefresh = time.Second
	}
	if cfg.ReadConns <= 0 {
		cfg.ReadConns = 8
	}
	if cfg.ScheduleEvery <= 0 {
		cfg.ScheduleEvery = 30 * time.Second
	}
	if cfg.ScheduleLead <= 0 {
		cfg.ScheduleLead = 2 * time.Hour
	}
	return &Service{repo: repo, locks: locks, engine: engine.New(repo, locks, cfg.Engine, m, log), cfg: cfg, metrics: m, log: log,
		readSlots: make(chan struct{}, cfg.ReadConns)}
}

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

// Warm loads every coupon into the engine's cache, so that the first crowd of a coupon does
// not wait on its load.
func (s *Service) Warm(ctx context.Context) error { return s.engine.Warm(ctx) }

func (s *Service) now() time.Time { return s.cfg.Engine.Now() }

// Drain starts the shutdown of this instance's issuing: each coupon it owns is let go as soon
// as its queue is empty, and batches forwarded to it are refused (see engine.Engine.Drain).
func (s *Service) Drain() { s.engine.Drain() }

// Drained waits until every coupon's queue is served and its lock released, or ctx ends (see
// engine.Engine.Drained).
func (s *Service) Drained(ctx context.Context) error { return s.engine.Drained(ctx) }

// Run does the service's background work until ctx ends: the engine's (coupon changes and
// facts from other instances, the coupons' refresh every MetaRefresh) and the materialising
// of the daily coupons of the schedules every ScheduleEvery.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.engine.Run(ctx) })
	wg.Go(func() { every(ctx, s.cfg.ScheduleEvery, s.MaterialiseSchedules) })
	wg.Wait()
}

// Ready reports whether PostgreSQL and a quorum of the Redis nodes answer.
func (s *Service) Ready(ctx context.Context) error {
	if err := s.repo.Ping(ctx); err != nil {
		return engine.Translate(err)
	}
	if err := s.locks.Ping(ctx); err != nil {
		return fmt.Errorf("%w: redis: %w", domain.ErrUnavailable, err)
	}
	return nil
}
