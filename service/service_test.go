package service

import (
	"couponsvc/domain"

	"context"
	"log/slog"
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
func (st stack) service(t *testing.T, c *testenv.Clock, bus bool, cfg Config) *Service {
	t.Helper()
	return st.serviceWith(t, st.repo(t), c, bus, cfg)
}

// serviceWith is service on repo (the stack's database behind it).
func (st stack) serviceWith(t *testing.T, repo Repository, c *testenv.Clock, bus bool, cfg Config) *Service {
	t.Helper()
	nodes := lock.NewNodes(st.redis, "", "")
	locks := lock.New(nodes)
	t.Cleanup(func() { locks.Close() })
	cfg.Engine.Now = c.Now
	if cfg.Engine.LockWait == 0 {
		cfg.Engine.LockWait = 3 * time.Second
	}
	if bus {
		cfg.Engine.Bus = notify.New(nodes, "test:coupon-changed", nil)
		cfg.Engine.Facts = notify.New(nodes, "test:coupon-facts", nil)
	}
	s := New(repo, engine.NewLocker(locks), cfg, metrics.New(), slog.New(slog.DiscardHandler))
	testenv.Background(t, "the service's background work (Run)", s.Run) // stops before the lock client closes
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
