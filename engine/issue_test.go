package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/testenv"
	"couponsvc/lock"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
)

// First come, first served is by arrival at the host (Issue's arrived), not by when a request got
// through this process: requests that arrived earlier but reach the queue while the batch that
// sells the coupon out is about to run still take their place (the boundary settle), and a
// queue is ordered by arrival whatever order the requests were handled in.
func TestFirstComeByArrivalAtTheStockBoundary(t *testing.T) {
	for _, tc := range []struct {
		name        string
		settle      time.Duration
		earlyShould bool // the early arrivals win
	}{
		{"with the boundary settle", 400 * time.Millisecond, true},
		{"without it (shows the test can fail)", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStack(t)
			c := testenv.NewClock(time.Now())
			s := st.engine(t, c, false, Config{BoundarySettle: tc.settle})
			st.create(t, domain.Coupon{Code: "FCFS", Name: "fcfs", DiscountAmount: 1, TotalQuantity: 10, OpensAt: c.Now().Add(-time.Hour), ValidDays: 7})
			ctx := context.Background()

			// Another holder keeps the coupon's lock while the late arrivals queue up.
			other := lock.New(lock.NewNodes(st.redis, "", ""))
			defer other.Close()
			held := other.Mutex(lockName("FCFS"))
			owner := lock.WithOwner(ctx, lock.NewOwner())
			if err := held.TryLock(owner, time.Second, 0); err != nil {
				t.Fatal(err)
			}

			base := time.Now().Add(-100 * time.Millisecond)
			type answer struct {
				user uuid.UUID
				err  error
			}
			answers := make(chan answer, 20)
			var wg sync.WaitGroup
			ask := func(user uuid.UUID, arrived time.Time) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := s.Issue(ctx, "FCFS", user, arrived)
					answers <- answer{user, err}
				}()
			}
			// Ten late arrivals, handled first and in reverse order of arrival.
			late := make([]uuid.UUID, 10)
			for i := range late {
				late[i] = uuid.New()
			}
			for i := len(late) - 1; i >= 0; i-- {
				ask(late[i], base.Add(50*time.Millisecond+time.Duration(i)*time.Millisecond))
			}
			waitQueued(t, s, "FCFS", 10)
			if err := held.Unlock(owner); err != nil {
				t.Fatal(err)
			}
			// Five that arrived before all of them get through this process only now: the
			// queue of ten already fills the stock of ten.
			time.Sleep(100 * time.Millisecond)
			early := make([]uuid.UUID, 5)
			for i := range early {
				early[i] = uuid.New()
				ask(early[i], base.Add(time.Duration(i)*time.Millisecond))
			}
			testenv.Wait(t, &wg, 10*time.Second, "all 15 requests are answered")
			close(answers)

			var won []uuid.UUID
			for a := range answers {
				switch {
				case a.err == nil:
					won = append(won, a.user)
				case !errors.Is(a.err, domain.ErrSoldOut):
					t.Fatalf("user %v: %v", a.user, a.err)
				}
			}
			if len(won) != 10 {
				t.Fatalf("%d issued, want 10", len(won))
			}
			want := append(append([]uuid.UUID{}, early...), late[:5]...)
			allEarly := true
			for _, u := range want {
				allEarly = allEarly && slices.Contains(won, u)
			}
			if allEarly != tc.earlyShould {
				t.Fatalf("the 10 first arrivals won: %v, want %v", allEarly, tc.earlyShould)
			}
		})
	}
}

// waitQueued waits until n requests wait in the coupon's queue.
func waitQueued(t *testing.T, s *Engine, code string, n int) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("%d requests queued for %s", n, code), func() bool {
		st := s.cached(code)
		if st == nil {
			return false
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.queue) >= n
	})
}

// What one instance's batches commit reaches the others (the facts bus): a holder's retry on
// another instance is answered 409 without a transaction, and after a sell-out the other
// instances answer the crowd from memory without a batch of their own. An instance without
// the bus needs a transaction for the same answers, which shows what is measured.
func TestFactsReachOtherInstances(t *testing.T) {
	st := newStack(t)
	c := testenv.NewClock(time.Now())
	ctx := context.Background()
	a := st.engine(t, c, true, Config{})
	b := st.engine(t, c, true, Config{})
	alone := st.engine(t, c, false, Config{})
	st.create(t, domain.Coupon{Code: "SHARED", Name: "shared", DiscountAmount: 1, TotalQuantity: 3,
		OpensAt: c.Now().Add(-time.Hour), ValidDays: 7})
	for _, s := range []*Engine{b, alone} {
		if err := s.Warm(ctx); err != nil {
			t.Fatal(err)
		}
	}
	u := []uuid.UUID{uuid.New(), uuid.New(), uuid.New(), uuid.New()}
	issue := func(s *Engine, user uuid.UUID, want error) {
		t.Helper()
		if _, err := s.Issue(ctx, "SHARED", user, time.Time{}); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("issue to %v: %v, want %v", user, err, want)
		}
	}

	issue(a, u[0], nil)
	testenv.WaitFor(t, 3*time.Second, "b learns that u0 holds SHARED", func() bool { return b.knows("SHARED", u[0], false) })
	issue(b, u[0], domain.ErrAlreadyIssued)
	if n := batches(b); n != 0 {
		t.Fatalf("b ran %d batches to answer a known holder", n)
	}
	issue(alone, u[0], domain.ErrAlreadyIssued)
	if n := batches(alone); n != 1 {
		t.Fatalf("the instance without the bus ran %d batches, want 1", n)
	}

	issue(a, u[1], nil)
	issue(a, u[2], nil)
	issue(a, u[3], domain.ErrSoldOut) // a's batch finds it sold out and says so
	testenv.WaitFor(t, 3*time.Second, "b knows SHARED is sold out, with its holders", func() bool {
		return b.knows("SHARED", u[2], true)
	})
	issue(b, u[3], domain.ErrSoldOut)
	issue(b, u[1], domain.ErrAlreadyIssued)
	issue(b, uuid.New(), domain.ErrSoldOut)
	if n := batches(b); n != 0 {
		t.Fatalf("b ran %d batches after the sell-out", n)
	}
}

// knows reports whether the instance holds user as a holder of code (and, with final, has
// the coupon's final holder set).
func (s *Engine) knows(code string, user uuid.UUID, final bool) bool {
	st := s.cached(code)
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	_, held := st.holders[user]
	return held && (!final || st.final)
}

func batches(s *Engine) uint64 {
	var m dto.Metric
	if err := s.metrics.BatchSize.Write(&m); err != nil {
		panic(err)
	}
	return m.GetHistogram().GetSampleCount()
}
