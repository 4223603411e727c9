package engine

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/metrics"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/google/uuid"
)

// In-memory stand-ins for PostgreSQL and the Redis lock, for the engine's unit tests (no
// servers). They are honest where the engine relies on them: the store keeps the stock and
// one row per user as the schema's CHECK and UNIQUE do and decides a batch in order as the
// issue statement does (repository/batch.go), refusing a token older than the last it
// accepted; the lock grants one holder at a time, with a fencing token that only grows.

// fakeStore is PostgreSQL as the engine sees it.
type fakeStore struct {
	mu      sync.Mutex
	coupons map[string]*domain.Coupon             // by code
	rows    map[uuid.UUID]map[uuid.UUID]uuid.UUID // coupon id -> user -> wallet id
	batches [][]uuid.UUID                         // the users of each batch written, in order
	// hook, when set, runs before a batch is decided; a non-nil error fails the batch with it
	// (commit: after writing it, as when the connection breaks after the commit). A batch
	// whose context ended meanwhile writes nothing.
	hook func(ctx context.Context, b repository.Batch) (err error, commit bool)
	// resolveErr, when set, is ResolveBatch's error (PostgreSQL still silent).
	resolveErr error
}

func newFakeStore(cs ...domain.Coupon) *fakeStore {
	f := &fakeStore{coupons: map[string]*domain.Coupon{}, rows: map[uuid.UUID]map[uuid.UUID]uuid.UUID{}}
	for _, c := range cs {
		if c.ID == uuid.Nil {
			c.ID = uuid.New()
		}
		f.coupons[c.Code] = &c
		f.rows[c.ID] = map[uuid.UUID]uuid.UUID{}
	}
	return f
}

func (f *fakeStore) CouponByCode(_ context.Context, code string) (domain.Coupon, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.coupons[code]
	if !ok {
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	return *c, nil
}

func (f *fakeStore) ListCoupons(context.Context) ([]domain.Coupon, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []domain.Coupon
	for _, c := range f.coupons {
		out = append(out, *c)
	}
	return out, nil
}

func (f *fakeStore) byID(id uuid.UUID) *domain.Coupon {
	for _, c := range f.coupons {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// IssueBatches decides each batch alone (the group's one transaction is all or nothing in
// PostgreSQL; here nothing fails halfway).
func (f *fakeStore) IssueBatches(ctx context.Context, batches []repository.Batch) []repository.BatchOutcome {
	out := make([]repository.BatchOutcome, len(batches))
	for i, b := range batches {
		if f.hook != nil {
			if err, commit := f.hook(ctx, b); err != nil {
				if commit {
					f.issue(b)
				}
				out[i].Err = err
				continue
			}
		}
		if ctx.Err() != nil {
			// The statement was cancelled before it ran (the lock was lost): as the
			// repository does, the rows say what was committed.
			out[i].Results, out[i].Err = f.ResolveBatch(context.Background(), b.CouponID, b.Users, b.Wallets)
			continue
		}
		out[i].Results, out[i].Err = f.issue(b)
	}
	return out
}

// issue is the issue statement: under a token not older than the last accepted, holders are
// AlreadyIssued, a user's first request counts, the earliest fresh requests win up to the
// stock, the others are SoldOut.
func (f *fakeStore) issue(b repository.Batch) ([]repository.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.byID(b.CouponID)
	if c == nil {
		return nil, fmt.Errorf("issue batch: %w", domain.ErrCouponNotFound)
	}
	if b.Fence < c.FenceToken {
		return nil, fmt.Errorf("issue batch: token %d, coupon already written with %d: %w", b.Fence, c.FenceToken, repository.ErrStaleFence)
	}
	c.FenceToken = b.Fence
	f.batches = append(f.batches, slices.Clone(b.Users))
	now := time.Now()
	rows := f.rows[c.ID]
	res := make([]repository.Result, len(b.Users))
	for i, u := range b.Users {
		_, held := rows[u]
		switch {
		case held:
			res[i] = repository.Result{Outcome: repository.AlreadyIssued}
		case c.IssuedQuantity >= c.TotalQuantity:
			res[i] = repository.Result{Outcome: repository.SoldOut}
		default:
			rows[u] = b.Wallets[i]
			c.IssuedQuantity++
			res[i] = repository.Result{Outcome: repository.Issued,
				Entry: domain.WalletEntry{ID: b.Wallets[i], CouponID: c.ID, UserID: u, IssuedAt: now}}
		}
	}
	return res, nil
}

func (f *fakeStore) ResolveBatch(_ context.Context, couponID uuid.UUID, users, wallets []uuid.UUID) ([]repository.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resolveErr != nil {
		return nil, f.resolveErr
	}
	res := make([]repository.Result, len(users))
	for i, u := range users {
		w, ok := f.rows[couponID][u]
		switch {
		case ok && w == wallets[i]:
			res[i] = repository.Result{Outcome: repository.Issued,
				Entry: domain.WalletEntry{ID: w, CouponID: couponID, UserID: u}}
		case ok:
			res[i] = repository.Result{Outcome: repository.AlreadyIssued}
		default:
			res[i] = repository.Result{Outcome: repository.Retry}
		}
	}
	return res, nil
}

func (f *fakeStore) HoldersOf(_ context.Context, couponID uuid.UUID) ([]uuid.UUID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uuid.UUID
	for u := range f.rows[couponID] {
		out = append(out, u)
	}
	return out, nil
}

func (f *fakeStore) UserWallet(_ context.Context, userID uuid.UUID) ([]domain.WalletEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []domain.WalletEntry
	for _, c := range f.coupons {
		if w, ok := f.rows[c.ID][userID]; ok {
			out = append(out, domain.WalletEntry{ID: w, CouponID: c.ID, CouponCode: c.Code, UserID: userID})
		}
	}
	return out, nil
}

// issued returns the coupon's issued quantity and its rows' count, which must agree.
func (f *fakeStore) issued(code string) (quantity, rows int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.coupons[code]
	return c.IssuedQuantity, len(f.rows[c.ID])
}

// batchCount is the number of batches the store wrote.
func (f *fakeStore) batchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.batches)
}

// fakeLocker is the Redis lock as the engine sees it: one holder per name, a fencing token
// per grant that only grows (unless reset, as Redis nodes restarting empty do).
type fakeLocker struct {
	mu    sync.Mutex
	locks map[string]*fakeGrant
	fence map[string]int64
}

type fakeGrant struct {
	holder *fakeMutex
	token  int64
	lost   chan struct{}
}

func newFakeLocker() *fakeLocker {
	return &fakeLocker{locks: map[string]*fakeGrant{}, fence: map[string]int64{}}
}

func (l *fakeLocker) Mutex(name string) Mutex { return &fakeMutex{l: l, name: name} }

func (l *fakeLocker) AdvanceFence(_ context.Context, name string, atLeast int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fence[name] = max(l.fence[name], atLeast)
	return nil
}

func (l *fakeLocker) Ping(context.Context) error { return nil }

// lose ends the current grant of name, as a lease running out does: its holder's Lost
// channel closes and the lock is free.
func (l *fakeLocker) lose(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.locks[name]; g != nil {
		close(g.lost)
		delete(l.locks, name)
	}
}

// resetFence forgets the fencing counter of name, as Redis nodes restarting empty do.
func (l *fakeLocker) resetFence(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fence[name] = 0
}

// fakeMutex is one handle on a named lock; the handle is the owner.
type fakeMutex struct {
	l    *fakeLocker
	name string
}

func (m *fakeMutex) TryLock(ctx context.Context, wait, _ time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		m.l.mu.Lock()
		if m.l.locks[m.name] == nil {
			m.l.fence[m.name]++
			m.l.locks[m.name] = &fakeGrant{holder: m, token: m.l.fence[m.name], lost: make(chan struct{})}
			m.l.mu.Unlock()
			return nil
		}
		m.l.mu.Unlock()
		if !time.Now().Before(deadline) {
			return lock.ErrTimeout
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (m *fakeMutex) grant() *fakeGrant {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	if g := m.l.locks[m.name]; g != nil && g.holder == m {
		return g
	}
	return nil
}

func (m *fakeMutex) Unlock(context.Context) error {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	if g := m.l.locks[m.name]; g != nil && g.holder == m {
		delete(m.l.locks, m.name)
		return nil
	}
	return lock.ErrLockLost
}

func (m *fakeMutex) Fence(context.Context) (int64, bool) {
	if g := m.grant(); g != nil {
		return g.token, true
	}
	return 0, false
}

func (m *fakeMutex) Lost(context.Context) <-chan struct{} {
	if g := m.grant(); g != nil {
		return g.lost
	}
	lost := make(chan struct{})
	close(lost)
	return lost
}

func (m *fakeMutex) Holder(context.Context) (string, bool, error) { return "", true, nil }

// newFakeEngine returns an engine of one instance over the fakes.
func newFakeEngine(t *testing.T, store *fakeStore, locks *fakeLocker, cfg Config) *Engine {
	t.Helper()
	if cfg.LockWait == 0 {
		cfg.LockWait = 3 * time.Second
	}
	s := New(store, locks, cfg, metrics.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() {
		s.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Drained(ctx); err != nil {
			t.Errorf("the engine's drainers did not stop: %v", err)
		}
	})
	return s
}
