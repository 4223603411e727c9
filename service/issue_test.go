package service

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"couponsvc/lock"

	"github.com/google/uuid"
)

// First come, first served is by arrival at the host (WithArrival), not by when a request got
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
			c := &clock{t: time.Now()}
			s := st.service(t, c, false, Config{BoundarySettle: tc.settle})
			mustCreate(t, s, Coupon{Code: "FCFS", Name: "fcfs", DiscountAmount: 1, TotalQuantity: 10, OpensAt: c.Now().Add(-time.Hour), ValidDays: 7})
			ctx := context.Background()

			// Another holder keeps the coupon's lock while the late arrivals queue up.
			other := lock.New(lock.NewNodes(st.redis, ""))
			defer other.Close()
			held := other.Mutex(lockName("FCFS"))
			owner := lock.WithOwner(ctx, lock.NewOwner())
			if err := held.TryLock(owner, time.Second, 0); err != nil {
				t.Fatal(err)
			}

			base := time.Now().Add(-time.Second)
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
					_, err := s.Issue(WithArrival(ctx, arrived), "FCFS", user)
					answers <- answer{user, err}
				}()
			}
			// Ten late arrivals, handled first and in reverse order of arrival.
			late := make([]uuid.UUID, 10)
			for i := range late {
				late[i] = uuid.New()
			}
			for i := len(late) - 1; i >= 0; i-- {
				ask(late[i], base.Add(500*time.Millisecond+time.Duration(i)*time.Millisecond))
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
			wg.Wait()
			close(answers)

			var won []uuid.UUID
			for a := range answers {
				switch {
				case a.err == nil:
					won = append(won, a.user)
				case !errors.Is(a.err, ErrSoldOut):
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
func waitQueued(t *testing.T, s *Service, code string, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if st := s.cached(code); st != nil {
			st.mu.Lock()
			q := len(st.queue)
			st.mu.Unlock()
			if q >= n {
				return
			}
		}
	}
	t.Fatalf("%d requests never queued for %s", n, code)
}
