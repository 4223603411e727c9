package service

import (
	"couponsvc/domain"

	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"couponsvc/engine"
	"couponsvc/internal/metrics"
	"couponsvc/internal/notify"
	"couponsvc/internal/testenv"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// clock is a business clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// stack is one PostgreSQL database and Redis node that several services share, as pods do.
type stack struct {
	dsn   string
	redis []string
}

func newStack(t *testing.T) stack {
	t.Helper()
	st := stack{dsn: testenv.Database(t), redis: testenv.Addrs(testenv.NewRedisNodes(t, 1))}
	if err := st.repo(t).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func (st stack) repo(t *testing.T) *repository.Repository {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), st.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return repository.New(pool)
}

// service starts one instance; with bus, it hears the others' changes and facts. Its background work
// (Run) runs until the test ends.
func (st stack) service(t *testing.T, c *clock, bus bool, cfg Config) *Service {
	t.Helper()
	nodes := lock.NewNodes(st.redis, "")
	locks := lock.New(nodes)
	cfg.Engine.Now = c.Now
	if cfg.Engine.LockWait == 0 {
		cfg.Engine.LockWait = 3 * time.Second
	}
	if bus {
		cfg.Engine.Bus = notify.New(nodes, "test:coupon-changed", nil)
		cfg.Engine.Facts = notify.New(nodes, "test:coupon-facts", nil)
	}
	s := New(st.repo(t), engine.NewLocker(locks), cfg, metrics.New(), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		testenv.Receive(t, done, 10*time.Second, "the service's background work (Run) stops when its context ends")
		locks.Close()
	})
	return s
}

func mustCreate(t *testing.T, s *Service, c domain.Coupon) domain.Coupon {
	t.Helper()
	out, err := s.CreateCoupon(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
