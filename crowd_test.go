package main

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/stats"
	"couponsvc/internal/testenv"

	"github.com/google/uuid"
)

// granted collects the 201 answers: user -> wallet id.
func granted(t *testing.T, users []uuid.UUID, answers []answer) map[uuid.UUID]uuid.UUID {
	t.Helper()
	out := map[uuid.UUID]uuid.UUID{}
	for i, a := range answers {
		if a.status == http.StatusCreated {
			if _, dup := out[users[i]]; dup {
				t.Fatalf("user %s got two 201s", users[i])
			}
			out[users[i]] = walletID(t, a)
		}
	}
	return out
}

func distinctUsers(n int) []uuid.UUID {
	users := make([]uuid.UUID, n)
	for i := range users {
		users[i] = uuid.New()
	}
	return users
}

// 1,000 distinct users released at once on a stock of 100.
func TestThousandAtOnceOnStockOfHundred(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(nil))
	createCoupon(t, st.dsn, "HUNDRED", 100)
	users := distinctUsers(1000)
	answers, lat := crowd(t, len(users), len(users), func(i int) answer { return in.issue(t, "HUNDRED", users[i]) })
	counts := statusCounts(answers)
	if counts[201] != 100 || counts[410] != 900 {
		t.Fatalf("statuses %v, want 100x201 and 900x410", counts)
	}
	checkInvariants(t, st.dsn, "HUNDRED", 100, granted(t, users, answers))
	t.Logf("1,000 at once on 100: p50 %v p99 %v max %v", stats.Percentile(stats.Sorted(lat), .5), stats.Percentile(stats.Sorted(lat), .99), stats.Percentile(stats.Sorted(lat), 1))
}

// 10,000 requests on A0001 (stock 300) from 10,000 distinct users, 200 concurrent clients,
// through the real HTTP server.
func TestTenThousandOnA0001(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(nil))
	users := distinctUsers(10000)
	start := time.Now()
	answers, lat := crowd(t, len(users), 200, func(i int) answer { return in.issue(t, "A0001", users[i]) })
	elapsed := time.Since(start)
	counts := statusCounts(answers)
	if counts[201] != 300 || counts[410] != 9700 {
		t.Fatalf("statuses %v, want 300x201 and 9700x410 (zero 5xx)", counts)
	}
	checkInvariants(t, st.dsn, "A0001", 300, granted(t, users, answers))
	t.Logf("10,000 on A0001, 200 clients: %.0f req/s, p50 %v p99 %v max %v", float64(len(users))/elapsed.Seconds(),
		stats.Percentile(stats.Sorted(lat), .5), stats.Percentile(stats.Sorted(lat), .99), stats.Percentile(stats.Sorted(lat), 1))
}

// Two instances share three Redis nodes and PostgreSQL and race on one coupon, with retries
// by users who already asked.
func TestTwoInstancesRace(t *testing.T) {
	st := newStack(t, 3)
	ins := []*instance{startInstance(t, st.env(nil)), startInstance(t, st.env(nil))}
	createCoupon(t, st.dsn, "RACE", 250)
	base := distinctUsers(1500)
	users := append(append([]uuid.UUID{}, base...), base[:500]...) // 500 users ask twice
	answers, _ := crowd(t, len(users), 300, func(i int) answer { return ins[i%2].issue(t, "RACE", users[i]) })
	counts := statusCounts(answers)
	if counts[201] != 250 || counts[201]+counts[409]+counts[410] != len(users) {
		t.Fatalf("statuses %v", counts)
	}
	checkInvariants(t, st.dsn, "RACE", 250, granted(t, users, answers))
}

// One user retrying 50 times at once gets one coupon.
func TestUserRetries50TimesConcurrently(t *testing.T) {
	st := newStack(t, 3)
	ins := []*instance{startInstance(t, st.env(nil)), startInstance(t, st.env(nil))}
	user := uuid.New()
	answers, _ := crowd(t, 50, 50, func(i int) answer { return ins[i%2].issue(t, "B0001", user) })
	counts := statusCounts(answers)
	if counts[201] != 1 || counts[409] != 49 {
		t.Fatalf("statuses %v, want 1x201 and 49x409", counts)
	}
	same := make([]uuid.UUID, len(answers))
	for i := range same {
		same[i] = user
	}
	checkInvariants(t, st.dsn, "B0001", 1, granted(t, same, answers))
}

// Redis holds nothing PostgreSQL cannot rebuild: after every Redis node restarts empty and
// the service restarts, holders still get 409, newcomers 201, and a sold-out coupon 410.
func TestRestartWithRedisEmptied(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(nil))
	createCoupon(t, st.dsn, "SMALL", 5)
	holders := distinctUsers(5)
	for _, u := range holders[:3] {
		if a := in.issue(t, "SMALL", u); a.status != 201 {
			t.Fatalf("before: %d %s", a.status, a.body)
		}
	}
	in.stop(t)
	for _, r := range st.redis {
		r.Stop(t)
		r.Start(t)
	}
	in = startInstance(t, st.env(nil))
	var wg sync.WaitGroup
	results := make([]answer, 3)
	for i, u := range holders[:3] {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = in.issue(t, "SMALL", u) }()
	}
	testenv.Wait(t, &wg, client.Timeout+5*time.Second, "the three holders' requests after the restart are answered")
	for i, a := range results {
		if a.status != 409 {
			t.Fatalf("holder %d after restart: %d %s", i, a.status, a.body)
		}
	}
	for _, u := range holders[3:] { // the fencing counters restarted at zero: the service catches up
		if a := in.issue(t, "SMALL", u); a.status != 201 {
			t.Fatalf("newcomer after restart: %d %s", a.status, a.body)
		}
	}
	if a := in.issue(t, "SMALL", uuid.New()); a.status != 410 {
		t.Fatalf("sold out after restart: %d %s", a.status, a.body)
	}
	checkInvariants(t, st.dsn, "SMALL", 5, nil)
}

// SIGTERM during a crowd: every in-flight request is answered, run returns nil (exit 0), and
// the locks are free at once for the next instance.
func TestGracefulShutdownDuringCrowd(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(nil))
	users := distinctUsers(600)
	var answers []answer
	done := make(chan struct{})
	go func() {
		answers, _ = crowd(t, len(users), 100, func(i int) answer {
			a, _ := send("POST", in.base+"/api/v1/coupons/B0001/issue", `{"userId":"`+users[i].String()+`"}`)
			return a
		})
		close(done)
	}()
	time.Sleep(150 * time.Millisecond)
	start := time.Now()
	in.stop(t)
	if took := time.Since(start); took > shutdownDrain+2*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	testenv.Receive(t, done, crowdBudget+time.Minute, "the crowd during the shutdown ends")
	// Requests sent after the listener closed fail to connect (status 0); every answered one
	// is a contract answer, and every 201 has its row.
	counts := statusCounts(answers)
	if counts[201] == 0 {
		t.Fatalf("nothing issued before shutdown: %v", counts)
	}
	for status := range counts {
		if status != 0 && status != 201 {
			t.Errorf("answer %d during shutdown (%v)", status, counts)
		}
	}
	checkInvariants(t, st.dsn, "B0001", counts[201], granted(t, users, answers))
	next := startInstance(t, st.env(map[string]string{"LOCK_WAIT": "500ms"}))
	if a := next.issue(t, "B0001", uuid.New()); a.status != 201 {
		t.Fatalf("next instance: %d %s (a lock left held?)", a.status, a.body)
	}
}
