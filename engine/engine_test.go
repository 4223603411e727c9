package engine

import (
	"couponsvc/domain"

	"context"
	"log/slog"
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
func (st stack) engine(t *testing.T, c *testenv.Clock, bus bool, cfg Config) *Engine {
	t.Helper()
	nodes := lock.NewNodes(st.redis, "", "")
	locks := lock.New(nodes)
	t.Cleanup(func() { locks.Close() })
	cfg.Now = c.Now
	if cfg.LockWait == 0 {
		cfg.LockWait = 3 * time.Second
	}
	if bus {
		cfg.Bus = notify.New(nodes, "test:coupon-changed", nil)
		cfg.Facts = notify.New(nodes, "test:coupon-facts", nil)
	}
	s := New(st.newRepo(t), NewLocker(locks), cfg, metrics.New(), slog.New(slog.DiscardHandler))
	testenv.Background(t, "the engine's background work (Run)", s.Run) // stops before the lock client closes
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
