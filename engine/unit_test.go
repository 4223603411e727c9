package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/testenv"
	"couponsvc/repository"

	"github.com/google/uuid"
)

// The engine against the in-memory store and lock (fake_test.go): no servers.

// answer is one Issue's outcome.
type answer struct {
	user  uuid.UUID
	entry domain.WalletEntry
	err   error
}

// openCoupon is a coupon open since an hour ago with the given stock.
func openCoupon(code string, stock int) domain.Coupon {
	return domain.Coupon{ID: uuid.New(), Code: code, Name: code, DiscountAmount: 1000, TotalQuantity: stock,
		OpensAt: time.Now().Add(-time.Hour), ValidDays: 7}
}

// A crowd of 2,000 concurrent requests (1,500 users, 500 of them asking twice) for a stock of
// 100: exactly the stock is issued, never twice to one user, every 201 is a stored row, every
// other answer is 409 or 410; once sold out, the crowd is answered without a transaction.
func TestUnitStockAndOnePerUser(t *testing.T) {
	store := newFakeStore(openCoupon("CROWD", 100))
	s := newFakeEngine(t, store, newFakeLocker(), Config{})
	users := make([]uuid.UUID, 1500)
	for i := range users {
		users[i] = uuid.New()
	}
	answers := make(chan answer, 2000)
	var wg sync.WaitGroup
	for i := range 2000 {
		u := users[i%len(users)]
		wg.Go(func() {
			e, err := s.Issue(context.Background(), "CROWD", u, time.Time{})
			answers <- answer{u, e, err}
		})
	}
	testenv.Wait(t, &wg, 30*time.Second, "2,000 requests are answered")
	close(answers)

	won := map[uuid.UUID]domain.WalletEntry{}
	for a := range answers {
		switch {
		case a.err == nil:
			if _, twice := won[a.user]; twice {
				t.Fatalf("user %v issued twice", a.user)
			}
			won[a.user] = a.entry
		case errors.Is(a.err, domain.ErrSoldOut), errors.Is(a.err, domain.ErrAlreadyIssued):
		default:
			t.Fatalf("user %v: %v", a.user, a.err)
		}
	}
	quantity, rows := store.issued("CROWD")
	if len(won) != 100 || quantity != 100 || rows != 100 {
		t.Fatalf("%d answered 201, %d issued, %d rows; want the stock, 100", len(won), quantity, rows)
	}
	for u, e := range won {
		if store.rows[e.CouponID][u] != e.ID || e.CouponCode != "CROWD" || !e.ExpiresAt.Equal(e.IssuedAt.Add(7*24*time.Hour)) {
			t.Fatalf("201 for %v is not its stored row: %+v", u, e)
		}
	}

	batches := store.batchCount()
	for _, u := range users[:20] {
		_, err := s.Issue(context.Background(), "CROWD", u, time.Time{})
		_, holder := won[u]
		if want := domain.ErrSoldOut; holder {
			want = domain.ErrAlreadyIssued
			if !errors.Is(err, want) {
				t.Fatalf("holder after the sell-out: %v, want %v", err, want)
			}
		} else if !errors.Is(err, want) {
			t.Fatalf("non-holder after the sell-out: %v, want %v", err, want)
		}
	}
	if n := store.batchCount(); n != batches {
		t.Fatalf("%d more batches after the sell-out; the final holder set answers them", n-batches)
	}
}

// Requests handled in any order are batched by arrival: the winners of a stock of 10 among 40
// are the 10 earliest arrivals, and each batch lists its requests in arrival order.
func TestUnitFirstComeFirstServed(t *testing.T) {
	store := newFakeStore(openCoupon("FCFS", 10))
	locks := newFakeLocker()
	s := newFakeEngine(t, store, locks, Config{BoundarySettle: -1})
	other := locks.Mutex(lockName("FCFS")) // another holder keeps the lock while the queue fills
	if err := other.TryLock(context.Background(), 0, 0); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Second)
	users := make([]uuid.UUID, 40)
	arrived := map[uuid.UUID]time.Time{}
	for i := range users {
		users[i] = uuid.New()
		arrived[users[i]] = base.Add(time.Duration(i) * time.Millisecond)
	}
	answers := make(chan answer, len(users))
	var wg sync.WaitGroup
	for _, i := range rand.Perm(len(users)) {
		u := users[i]
		wg.Go(func() {
			_, err := s.Issue(context.Background(), "FCFS", u, arrived[u])
			answers <- answer{user: u, err: err}
		})
	}
	waitQueued(t, s, "FCFS", len(users))
	if err := other.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	testenv.Wait(t, &wg, 10*time.Second, "40 requests are answered")
	close(answers)
	for a := range answers {
		first := arrived[a.user].Before(base.Add(10 * time.Millisecond))
		if first != (a.err == nil) || (a.err != nil && !errors.Is(a.err, domain.ErrSoldOut)) {
			t.Errorf("arrival %v: %v", arrived[a.user].Sub(base), a.err)
		}
	}
	for _, b := range store.batches {
		for i := 1; i < len(b); i++ {
			if arrived[b[i]].Before(arrived[b[i-1]]) {
				t.Fatalf("a batch lists an arrival of %v after one of %v", arrived[b[i]].Sub(base), arrived[b[i-1]].Sub(base))
			}
		}
	}
}

// The batch that sells the coupon out waits for earlier arrivals still on their way (the
// boundary settle): five requests that arrived before ten queued ones, but are handled 100 ms
// after them, still win. Without the settle they lose, which shows the test can fail.
func TestUnitSettleAtTheStockBoundary(t *testing.T) {
	for _, tc := range []struct {
		name        string
		settle      time.Duration
		earlyShould bool
	}{
		{"with the boundary settle", 400 * time.Millisecond, true},
		{"without it", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeStore(openCoupon("EDGE", 10))
			locks := newFakeLocker()
			s := newFakeEngine(t, store, locks, Config{BoundarySettle: tc.settle})
			other := locks.Mutex(lockName("EDGE"))
			if err := other.TryLock(context.Background(), 0, 0); err != nil {
				t.Fatal(err)
			}
			base := time.Now().Add(-100 * time.Millisecond)
			answers := make(chan answer, 15)
			var wg sync.WaitGroup
			ask := func(u uuid.UUID, at time.Time) {
				wg.Go(func() {
					_, err := s.Issue(context.Background(), "EDGE", u, at)
					answers <- answer{user: u, err: err}
				})
			}
			for i := range 10 {
				ask(uuid.New(), base.Add(50*time.Millisecond+time.Duration(i)*time.Millisecond))
			}
			waitQueued(t, s, "EDGE", 10)
			if err := other.Unlock(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			early := map[uuid.UUID]bool{}
			for i := range 5 {
				u := uuid.New()
				early[u] = true
				ask(u, base.Add(time.Duration(i)*time.Millisecond))
			}
			testenv.Wait(t, &wg, 10*time.Second, "15 requests are answered")
			close(answers)
			earlyWon := 0
			for a := range answers {
				if a.err == nil && early[a.user] {
					earlyWon++
				}
			}
			if got := earlyWon == 5; got != tc.earlyShould {
				t.Fatalf("%d of the 5 earliest arrivals won; all of them: %v, want %v", earlyWon, got, tc.earlyShould)
			}
			if quantity, rows := store.issued("EDGE"); quantity != 10 || rows != 10 {
				t.Fatalf("%d issued, %d rows, want 10", quantity, rows)
			}
		})
	}
}

// A lock lost while its batch's statement runs cancels the statement (nothing is written
// under it); the requests go again under a new grant and are issued once.
func TestUnitLockLostMidBatch(t *testing.T) {
	store := newFakeStore(openCoupon("LOST", 5))
	locks := newFakeLocker()
	s := newFakeEngine(t, store, locks, Config{})
	started := make(chan struct{})
	var once sync.Once
	store.hook = func(ctx context.Context, _ repository.Batch) (error, bool) {
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil, false
		}
		close(started)
		select {
		case <-ctx.Done(): // the engine cancels the statement of a lost lock
		case <-time.After(5 * time.Second):
			t.Error("the batch's statement was not cancelled when its lock was lost")
		}
		return nil, false
	}
	answers := make(chan answer, 5)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			u := uuid.New()
			_, err := s.Issue(context.Background(), "LOST", u, time.Time{})
			answers <- answer{user: u, err: err}
		})
	}
	testenv.Receive(t, started, 5*time.Second, "the first batch starts")
	locks.lose(lockName("LOST"))
	testenv.Wait(t, &wg, 10*time.Second, "5 requests are answered")
	close(answers)
	for a := range answers {
		if a.err != nil {
			t.Errorf("user %v: %v", a.user, a.err)
		}
	}
	c, _ := store.CouponByCode(context.Background(), "LOST")
	if quantity, rows := store.issued("LOST"); quantity != 5 || rows != 5 || c.FenceToken < 2 {
		t.Fatalf("%d issued, %d rows, under token %d; want 5 under a grant after the lost one", quantity, rows, c.FenceToken)
	}
}

// What a failing store makes of a request, and of the same user's retry.
func TestUnitStoreErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name   string
		fence  int64 // the token PostgreSQL last accepted, the lock's counter being 0
		err    error // the batch's error, once
		commit bool  // the failed batch was committed nevertheless
		want   error // the answer
		retry  error // the same user's retry (nil: issued)
	}{
		{name: "PostgreSQL unreachable", err: fmt.Errorf("issue batch: %w", domain.ErrUnavailable), want: domain.ErrUnavailable},
		{name: "a bug", err: boom, want: boom},
		{name: "Redis lost its fencing counters: a stale token, then a fresh grant", fence: 7},
		{name: "outcome unknown, committed", err: fmt.Errorf("%w: connection reset", domain.ErrOutcomeUnknown), commit: true,
			want: domain.ErrOutcomeUnknown, retry: domain.ErrAlreadyIssued},
		{name: "outcome unknown, not committed", err: fmt.Errorf("%w: connection reset", domain.ErrOutcomeUnknown),
			want: domain.ErrOutcomeUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openCoupon("FAIL", 10)
			c.FenceToken = tc.fence
			store := newFakeStore(c)
			s := newFakeEngine(t, store, newFakeLocker(), Config{})
			var once sync.Once
			store.hook = func(context.Context, repository.Batch) (err error, commit bool) {
				once.Do(func() { err, commit = tc.err, tc.commit })
				return err, commit
			}
			user := uuid.New()
			_, err := s.Issue(context.Background(), "FAIL", user, time.Time{})
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("first answer %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				return
			}
			if tc.retry != nil {
				// The outcome is resolved in the background: the user is then known to hold
				// the coupon, and the retry is answered without a transaction.
				testenv.WaitFor(t, 5*time.Second, "the unknown outcome is resolved", func() bool {
					return s.knows("FAIL", user, false)
				})
			}
			batches := store.batchCount()
			_, err = s.Issue(context.Background(), "FAIL", user, time.Time{})
			if !errors.Is(err, tc.retry) || (tc.retry == nil && err != nil) {
				t.Fatalf("retry answered %v, want %v", err, tc.retry)
			}
			if quantity, rows := store.issued("FAIL"); quantity != 1 || rows != 1 {
				t.Fatalf("%d issued, %d rows, want 1", quantity, rows)
			}
			if tc.retry != nil && store.batchCount() != batches {
				t.Fatal("the retry of a known holder ran a batch")
			}
		})
	}
}

// A request that waited LOCK_WAIT for a lock another holder keeps is answered LOCK_TIMEOUT,
// and is never issued afterwards.
func TestUnitLockTimeout(t *testing.T) {
	store := newFakeStore(openCoupon("BUSY", 10))
	locks := newFakeLocker()
	s := newFakeEngine(t, store, locks, Config{LockWait: 50 * time.Millisecond})
	other := locks.Mutex(lockName("BUSY"))
	if err := other.TryLock(context.Background(), 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Issue(context.Background(), "BUSY", uuid.New(), time.Time{}); !errors.Is(err, domain.ErrLockTimeout) {
		t.Fatalf("%v, want %v", err, domain.ErrLockTimeout)
	}
	if err := other.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if quantity, _ := store.issued("BUSY"); quantity != 0 {
		t.Fatalf("a request answered LOCK_TIMEOUT was issued afterwards (%d)", quantity)
	}
}
