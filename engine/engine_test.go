package engine

import (
	"couponsvc/domain"

	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/metrics"
	"couponsvc/internal/notify"
	"couponsvc/internal/testenv"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The tests here run the engine against real PostgreSQL and Redis servers; fake_test.go runs
// it against an in-memory store and lock, without servers.

func TestMain(m *testing.M) { testenv.Main(m) }

// clock is a business clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// stack is one PostgreSQL database and Redis node that several engines share, as pods do.
type stack struct {
	dsn   string
	redis []string
	repo  *repository.Repository
}

func newStack(t *testing.T) stack {
	t.Helper()
	st := stack{dsn: testenv.Database(t), redis: testenv.Addrs(testenv.NewRedisNodes(t, 1))}
	st.repo = st.newRepo(t)
	if err := st.repo.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func (st stack) newRepo(t *testing.T) *repository.Repository {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), st.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return repository.New(pool)
}

// engine starts one instance; with bus, it hears the others' changes and facts. Its background
// work (Run) runs until the test ends.
func (st stack) engine(t *testing.T, c *clock, bus bool, cfg Config) *Engine {
	t.Helper()
	nodes := lock.NewNodes(st.redis, "")
	locks := lock.New(nodes)
	cfg.Now = c.Now
	if cfg.LockWait == 0 {
		cfg.LockWait = 3 * time.Second
	}
	if bus {
		cfg.Bus = notify.New(nodes, "test:coupon-changed", nil)
		cfg.Facts = notify.New(nodes, "test:coupon-facts", nil)
	}
	s := New(st.newRepo(t), NewLocker(locks), cfg, metrics.New(), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		testenv.Receive(t, done, 10*time.Second, "the engine's background work (Run) stops when its context ends")
		locks.Close()
	})
	return s
}

// create stores coupon c in PostgreSQL, as an admin does.
func (st stack) create(t *testing.T, c domain.Coupon) domain.Coupon {
	t.Helper()
	out, err := st.repo.CreateCoupon(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
