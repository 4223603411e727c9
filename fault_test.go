package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"couponsvc/internal/stats"
	"couponsvc/internal/testenv"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Each fault test runs a crowd over the three demo tiers, injects a fault part-way, lets it
// recover, then checks PostgreSQL: no over-issue, no duplicate, every 201 has its row and no row
// lacks its 201, no 409 for a user without a row, no 410 for a coupon with stock left; and that
// the service serves again within a stated time without a restart. Each test logs one
// "REPORT|fault|what the service did|recovery|invariants" line; `make reliability` turns them
// into docs/RELIABILITY.md.

var tiers = []string{"A0001", "B0001", "C0001"}

// pacedCrowd is a crowd spread over a duration, so that a fault lands in the middle of it.
type pacedCrowd struct {
	users   []uuid.UUID
	codes   []string
	answers []answer
	sent    []time.Time
	lat     []time.Duration
	errs    []error
}

// errNotSent marks a request of a paced crowd that was not sent: the crowd ran past
// crowdBudget (a stalled service), and the test fails on it in allowOnly.
var errNotSent = errors.New("not sent: the crowd ran past its budget")

// runPacedCrowd sends n issue requests with the given number of clients over about dur,
// spread over the three tiers; one request in ten repeats an earlier user's request (a retry).
// Requests go round-robin to the instances' base URLs. Requests not started within
// crowdBudget are not sent (errNotSent), so it returns within crowdBudget and client.Timeout.
func runPacedCrowd(bases []string, n, clients int, dur time.Duration) *pacedCrowd {
	c := newPacedCrowd(n)
	for i := range c.users {
		if i%10 == 9 {
			c.users[i], c.codes[i] = c.users[i-5], c.codes[i-5]
			continue
		}
		c.users[i], c.codes[i] = uuid.New(), tiers[i%3]
	}
	c.run(bases, clients, dur)
	return c
}

func newPacedCrowd(n int) *pacedCrowd {
	return &pacedCrowd{users: make([]uuid.UUID, n), codes: make([]string, n), answers: make([]answer, n),
		sent: make([]time.Time, n), lat: make([]time.Duration, n), errs: make([]error, n)}
}

// run sends the crowd's requests with the given number of clients over about dur.
func (c *pacedCrowd) run(bases []string, clients int, dur time.Duration) {
	n := len(c.users)
	interval := dur / time.Duration(max(n/clients, 1))
	deadline := time.Now().Add(crowdBudget)
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for i := w; i < n; i += clients {
				if time.Now().After(deadline) {
					c.errs[i] = errNotSent
					continue
				}
				time.Sleep(time.Until(next))
				next = next.Add(interval)
				c.sent[i] = time.Now()
				c.answers[i], c.errs[i] = send("POST", bases[i%len(bases)]+"/api/v1/coupons/"+c.codes[i]+"/issue",
					`{"userId":"`+c.users[i].String()+`"}`)
				c.lat[i] = time.Since(c.sent[i])
			}
		}()
	}
	wg.Wait() // bounded: see above
}

// summary counts answers as "201", "409", "503 UNAVAILABLE", "transport error", ...
func (c *pacedCrowd) summary() map[string]int {
	m := map[string]int{}
	for i, a := range c.answers {
		k := strconv.Itoa(a.status)
		switch {
		case errors.Is(c.errs[i], errNotSent):
			k = errNotSent.Error()
		case c.errs[i] != nil:
			k = "transport error"
		case a.status >= 500 || a.status == 429:
			k = strings.TrimSpace(k + " " + a.errorCode()) // nginx's 502 has no contract body
		}
		m[k]++
	}
	return m
}

func (c *pacedCrowd) String() string {
	s := c.summary()
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d× %s", s[k], k)
	}
	return strings.Join(parts, ", ")
}

// verify checks the invariants of every tier against PostgreSQL and the answers given.
func (c *pacedCrowd) verify(t *testing.T, dsn string) {
	t.Helper()
	ctx := context.Background()
	conn := db(t, dsn)
	for _, code := range tiers {
		granted := map[uuid.UUID]uuid.UUID{}
		for i, a := range c.answers {
			if c.codes[i] == code && a.status == http.StatusCreated {
				if _, dup := granted[c.users[i]]; dup {
					t.Fatalf("%s: user %s got two 201s", code, c.users[i])
				}
				granted[c.users[i]] = walletID(t, a)
			}
		}
		var issued, total int
		if err := conn.QueryRow(ctx, `SELECT issued_quantity, total_quantity FROM coupon WHERE code = $1`, code).Scan(&issued, &total); err != nil {
			t.Fatal(err)
		}
		c.explainRowsWithout201(t, dsn, code, granted)
		checkInvariants(t, dsn, code, len(granted), granted)
		holders := map[uuid.UUID]bool{}
		rows, err := conn.Query(ctx, `SELECT w.user_id FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id WHERE c.code = $1`, code)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var u uuid.UUID
			if err := rows.Scan(&u); err != nil {
				t.Fatal(err)
			}
			holders[u] = true
		}
		for i, a := range c.answers {
			if c.codes[i] != code {
				continue
			}
			switch a.status {
			case http.StatusConflict:
				if !holders[c.users[i]] {
					t.Fatalf("%s: 409 for user %s who holds no coupon", code, c.users[i])
				}
			case http.StatusGone:
				if issued < total {
					t.Fatalf("%s: 410 while %d of %d remain", code, total-issued, total)
				}
			}
		}
	}
}

// explainRowsWithout201 logs, for a few users holding code without a 201 among their
// answers, when each row was written and what each of their requests was answered when.
func (c *pacedCrowd) explainRowsWithout201(t *testing.T, dsn, code string, granted map[uuid.UUID]uuid.UUID) {
	t.Helper()
	rows, err := db(t, dsn).Query(context.Background(), `SELECT w.user_id, w.id, w.issued_at FROM coupon_wallet w
		JOIN coupon c ON c.id = w.coupon_id WHERE c.code = $1 ORDER BY w.issued_at`, code)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	shown := 0
	for rows.Next() && shown < 5 {
		var u, id uuid.UUID
		var at time.Time
		if err := rows.Scan(&u, &id, &at); err != nil {
			t.Fatal(err)
		}
		if _, ok := granted[u]; ok {
			continue
		}
		shown++
		msg := fmt.Sprintf("%s: user %s holds row %s written %s, never answered 201:", code, u, id, at.Format("15:04:05.000"))
		for i := range c.users {
			if c.users[i] == u && c.codes[i] == code {
				msg += fmt.Sprintf(" [request %d sent %s, %d %s after %v, err %v]", i, c.sent[i].Format("15:04:05.000"),
					c.answers[i].status, c.answers[i].errorCode(), c.lat[i].Round(time.Millisecond), c.errs[i])
			}
		}
		t.Log(msg)
	}
}

// recoveryTime measures how long after the fault ended a fresh user is issued C0001 again.
func recoveryTime(t *testing.T, base string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		a, err := send("POST", base+"/api/v1/coupons/C0001/issue", `{"userId":"`+uuid.NewString()+`"}`)
		if err == nil && a.status == http.StatusCreated {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("not serving %v after the fault ended (last: %d %s %v)", limit, a.status, a.body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func report(t *testing.T, fault, behaviour string, recovery time.Duration) {
	t.Helper()
	if t.Failed() {
		return
	}
	t.Logf("REPORT|%s|%s|%s|OK: no over-issue, no duplicate, every 201 has its row and every row its 201, no wrong 409/410",
		fault, behaviour, recovery.Round(time.Millisecond))
}

func allowOnly(t *testing.T, c *pacedCrowd, allowed ...string) {
	t.Helper()
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for k, n := range c.summary() {
		if !ok[k] {
			t.Errorf("%d answers %q; allowed: %v (all: %s)", n, k, allowed, c)
		}
	}
}

func TestFaultOneRedisNodePaused(t *testing.T) {
	st := newStack(t, 3)
	ins := []*instance{startInstance(t, st.env(nil)), startInstance(t, st.env(nil))}
	go func() {
		time.Sleep(800 * time.Millisecond)
		st.redis[0].Pause(t)
		time.Sleep(1200 * time.Millisecond)
		st.redis[0].Resume(t)
	}()
	c := runPacedCrowd([]string{ins[0].base, ins[1].base}, 6000, 200, 3*time.Second)
	allowOnly(t, c, "201", "409", "410")
	c.verify(t, st.dsn)
	rec := recoveryTime(t, ins[0].base, 5*time.Second)
	report(t, "1 of 3 Redis nodes frozen (SIGSTOP) for 1.2 s mid-crowd", "quorum kept: every answer 201/409/410 ("+c.String()+")", rec)
}

func TestFaultTwoRedisNodesStopped(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(nil))
	var faultAt, backAt time.Time
	go func() {
		time.Sleep(800 * time.Millisecond)
		faultAt = time.Now()
		st.redis[0].Stop(t)
		st.redis[1].Stop(t)
		time.Sleep(3 * time.Second)
		backAt = time.Now()
		st.redis[0].Start(t)
		st.redis[1].Start(t)
	}()
	c := runPacedCrowd([]string{in.base}, 7000, 200, 5*time.Second)
	allowOnly(t, c, "201", "409", "410", "503 UNAVAILABLE")
	var slowest time.Duration
	for i, a := range c.answers {
		if a.status == 503 {
			slowest = max(slowest, c.lat[i])
		}
	}
	if c.summary()["503 UNAVAILABLE"] == 0 {
		t.Errorf("no 503 while 2 of 3 nodes were down: %s", c)
	}
	if slowest > 2*time.Second {
		t.Errorf("a 503 UNAVAILABLE took %v; it must come well before LOCK_WAIT (3s)", slowest)
	}
	// The grant held when the nodes went stays valid until its lease runs out unrenewed (as
	// Redlock allows: nobody else can hold it meanwhile); after that, nothing is issued.
	var during int
	if err := db(t, st.dsn).QueryRow(context.Background(), `SELECT count(*) FROM coupon_wallet WHERE issued_at > $1 AND issued_at < $2`,
		faultAt.Add(lock.DefaultWatchdogTimeout+300*time.Millisecond), backAt).Scan(&during); err != nil {
		t.Fatal(err)
	}
	if during != 0 {
		t.Errorf("%d coupons issued while the quorum was gone", during)
	}
	c.verify(t, st.dsn)
	rec := recoveryTime(t, in.base, 5*time.Second)
	report(t, "2 of 3 Redis nodes stopped for 3 s mid-crowd",
		fmt.Sprintf("the grant held went on until its 1.5 s lease ran out unrenewed, then 503 UNAVAILABLE within %v (slowest), nothing issued (%s)", slowest.Round(time.Millisecond), c), rec)
}

func TestFaultAllRedisRestartedEmpty(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(nil))
	go func() {
		time.Sleep(time.Second)
		for _, r := range st.redis {
			r.Stop(t)
		}
		for _, r := range st.redis {
			r.Start(t)
		}
	}()
	c := runPacedCrowd([]string{in.base}, 6000, 200, 3*time.Second)
	allowOnly(t, c, "201", "409", "410", "503 UNAVAILABLE")
	c.verify(t, st.dsn)
	rec := recoveryTime(t, in.base, 5*time.Second)
	report(t, "all 3 Redis nodes restarted empty mid-crowd (locks and fencing counters lost)",
		"fencing counters caught up from PostgreSQL, no wrong 409/410 ("+c.String()+")", rec)
}

func TestFaultPostgresRestarted(t *testing.T) {
	pg := testenv.NewPostgres(t)
	st := &stack{dsn: pg.CreateDatabase(t), redis: testenv.NewRedisNodes(t, 3)}
	in := startInstance(t, st.env(nil))
	var downFor time.Duration
	go func() {
		time.Sleep(800 * time.Millisecond)
		start := time.Now()
		pg.Stop(t)
		time.Sleep(700 * time.Millisecond)
		pg.Start(t)
		downFor = time.Since(start)
	}()
	c := runPacedCrowd([]string{in.base}, 5000, 200, 3*time.Second)
	allowOnly(t, c, "201", "409", "410", "503 UNAVAILABLE")
	c.verify(t, st.dsn)
	rec := recoveryTime(t, in.base, 15*time.Second)
	report(t, fmt.Sprintf("PostgreSQL stopped (fast shutdown) and restarted mid-crowd, down %v", downFor.Round(10*time.Millisecond)),
		"answers while it was down waited or got 503 UNAVAILABLE; none 201 without its row; the pool reconnected by itself ("+c.String()+")", rec)
}

// A holder stalled past its fixed lease: the next holder proceeds, and the stale holder's
// write is refused by the fencing check in PostgreSQL.
func TestFaultStaleHolderRefusedByFencing(t *testing.T) {
	st := newStack(t, 3)
	startInstance(t, st.env(nil)) // migrates and seeds
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, st.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	repo := repository.New(pool)
	c, err := repo.CouponByCode(ctx, "A0001")
	if err != nil {
		t.Fatal(err)
	}
	clients := []*lock.Client{lock.New(lock.NewNodes(testenv.Addrs(st.redis), "", "")), lock.New(lock.NewNodes(testenv.Addrs(st.redis), "", ""))}
	defer clients[0].Close()
	defer clients[1].Close()
	stale := lock.WithOwner(ctx, lock.NewOwner())
	m1 := clients[0].Mutex("coupon:A0001")
	if err := m1.TryLock(stale, time.Second, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	f1, _ := m1.Fence(stale)
	// The holder stalls; its lease runs out.
	testenv.Receive(t, m1.Lost(stale), 5*time.Second, "the stalled holder's 300ms fixed lease runs out (Lost closes)")
	fresh := lock.WithOwner(ctx, lock.NewOwner())
	m2 := clients[1].Mutex("coupon:A0001")
	if err := m2.TryLock(fresh, 2*time.Second, 0); err != nil {
		t.Fatalf("the next holder did not proceed: %v", err)
	}
	f2, _ := m2.Fence(fresh)
	if f2 <= f1 {
		t.Fatalf("fencing tokens %d then %d", f1, f2)
	}
	if _, err := repo.IssueBatch(ctx, c.ID, f2, []uuid.UUID{uuid.New()}); err != nil {
		t.Fatal(err)
	}
	// The stale holder wakes up and writes with its old token: refused, nothing written.
	if _, err := repo.IssueBatch(ctx, c.ID, f1, []uuid.UUID{uuid.New(), uuid.New()}); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("stale holder's write: %v", err)
	}
	if err := m1.Unlock(stale); err == nil {
		t.Fatal("the stale holder's unlock succeeded")
	}
	if err := m2.Unlock(fresh); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, st.dsn, "A0001", 1, nil)
	report(t, "lock holder stalled past its fixed lease (300 ms)",
		fmt.Sprintf("next holder proceeded with token %d > %d; the stale holder's write was refused by PostgreSQL's fencing check, its unlock returned ErrLockLost", f2, f1), 0)
}

// holdCouponRow locks a coupon's row from another session until release is called: every
// issue transaction of that coupon stalls, as with a slow or stuck PostgreSQL.
func holdCouponRow(t *testing.T, dsn, code string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM coupon WHERE code = $1 FOR UPDATE`, code); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			tx.Rollback(ctx)
			conn.Close(ctx)
		})
	}
	t.Cleanup(release)
	return release
}

func goroutines(t *testing.T, base string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go_goroutines (\d+)`).FindStringSubmatch(string(do(t, "GET", base+"/metrics", "").body))
	if m == nil {
		t.Fatal("no go_goroutines in /metrics")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestFaultSlowPostgres(t *testing.T) {
	st := newStack(t, 3)
	// A process of its own, so that /metrics counts the service's goroutines and nothing else.
	in := startProcess(t, st.env(map[string]string{"LOCK_WAIT": "1s"}))
	idle := goroutines(t, in.base)
	release := holdCouponRow(t, st.dsn, "C0001")
	// A first request's batch stalls on the row; the crowd queues behind it.
	go send("POST", in.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+uuid.NewString()+`"}`)
	time.Sleep(100 * time.Millisecond)
	var peak int
	go func() {
		time.Sleep(1500 * time.Millisecond)
		peak = goroutines(t, in.base)
		release()
	}()
	users := distinctUsers(2000)
	answers, lat := crowd(t, len(users), 200, func(i int) answer {
		a, _ := send("POST", in.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+users[i].String()+`"}`)
		return a
	})
	var timeouts int
	for i, a := range answers {
		switch {
		case a.status == 201:
		case a.status == 503 && (a.errorCode() == "LOCK_TIMEOUT" || a.errorCode() == "UNAVAILABLE"):
			timeouts++
		default:
			t.Errorf("answer %d %s", a.status, a.body)
		}
		// Queued requests answer at LOCK_WAIT; one in the stalled batch waits for it.
		if lat[i] > 1*time.Second+5*time.Second+2*time.Second {
			t.Errorf("an answer took %v", lat[i])
		}
	}
	if timeouts == 0 {
		t.Errorf("no request timed out during a 1.5 s stall with LOCK_WAIT=1s")
	}
	checkInvariants(t, st.dsn, "C0001", statusCounts(answers)[201]+1, nil)
	rec := recoveryTime(t, in.base, 5*time.Second)
	var after int
	client.CloseIdleConnections() // each open keep-alive connection holds a server goroutine
	deadline := time.Now().Add(10 * time.Second)
	for after = goroutines(t, in.base); after > idle+10 && time.Now().Before(deadline); after = goroutines(t, in.base) {
		time.Sleep(100 * time.Millisecond)
	}
	if after > idle+10 {
		t.Errorf("goroutines: %d idle, %d during, still %d after 10 s", idle, peak, after)
	}
	report(t, "slow PostgreSQL: the coupon row locked by another session for 1.5 s under a crowd (LOCK_WAIT=1s)",
		fmt.Sprintf("%d of %d answered 503 LOCK_TIMEOUT/UNAVAILABLE within their deadline (max %v), the rest 201 after the stall; goroutines %d idle, %d during, %d after",
			timeouts, len(answers), stats.Percentile(stats.Sorted(lat), 1).Round(time.Millisecond), idle, peak, after), rec)
}

// buildWait bounds the build of the couponsvc binary (a few seconds with the build cache warm).
const buildWait = 5 * time.Minute

// The couponsvc binary, built once for the tests that need a real process to signal.
var binary struct {
	once sync.Once
	path string
	err  error
}

func buildBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "couponsvc-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "couponsvc")
		ctx, cancel := context.WithTimeout(context.Background(), buildWait)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binary.path, ".").CombinedOutput()
		switch {
		case ctx.Err() != nil:
			binary.err = fmt.Errorf("go build of couponsvc did not finish within %v\n%s", buildWait, out)
		case err != nil:
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// process is couponsvc running as its own process.
type process struct {
	base string
	cmd  *exec.Cmd
	done chan error
	logs *syncBuffer
}

func startProcess(t *testing.T, env map[string]string) *process {
	t.Helper()
	bin := buildBinary(t)
	port := testenv.FreePort(t)
	env["HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", port)
	p := &process{base: "http://" + env["HTTP_ADDR"], cmd: exec.Command(bin, "serve"), done: make(chan error, 1), logs: &syncBuffer{}}
	p.cmd.Env = os.Environ()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stderr = p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	waitUp(t, p.base, p.done, p.logs)
	return p
}

func TestFaultInstanceKilledHoldingLock(t *testing.T) {
	st := newStack(t, 3)
	const lease = 2 * time.Second
	victim := startProcess(t, st.env(map[string]string{"LOCK_LEASE": lease.String()}))
	survivor := startInstance(t, st.env(nil))
	release := holdCouponRow(t, st.dsn, "C0001")
	go send("POST", victim.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+uuid.NewString()+`"}`)
	// Wait until the victim holds C0001's lock (its transaction is stalled on the row).
	probe := lock.New(lock.NewNodes(testenv.Addrs(st.redis), "", ""))
	defer probe.Close()
	testenv.WaitFor(t, 5*time.Second, "the victim holds C0001's lock", func() bool {
		locked, _ := probe.Mutex("coupon:C0001").IsLocked(context.Background())
		return locked
	})
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Receive(t, victim.done, 10*time.Second, "the victim process exits after SIGKILL")
	killedAt := time.Now()
	// Its transaction still waits on the row lock; PostgreSQL notices the dead client within
	// client_connection_check_interval (1 s) and aborts it, so it never commits for nobody.
	time.Sleep(1500 * time.Millisecond)
	release()
	rec := recoveryTime(t, survivor.base, lease+3*time.Second)
	if since := time.Since(killedAt); since > lease+time.Second {
		t.Errorf("the survivor issued C0001 %v after the kill; the lease is %v", since, lease)
	}
	checkInvariants(t, st.dsn, "C0001", 1, nil) // the survivor's; the victim's died with it
	report(t, fmt.Sprintf("an instance killed (SIGKILL) while holding a coupon's lock (fixed lease %v)", lease),
		fmt.Sprintf("its transaction died with its connection; another instance issued that coupon %v after the kill", time.Since(killedAt).Round(time.Millisecond)), rec)
}

func TestFaultSIGTERMDuringCrowd(t *testing.T) {
	st := newStack(t, 3)
	p := startProcess(t, st.env(nil))
	var c *pacedCrowd
	done := make(chan struct{})
	go func() { c = runPacedCrowd([]string{p.base}, 4000, 200, 2*time.Second); close(done) }()
	time.Sleep(time.Second)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	select {
	case exitErr = <-p.done:
	case <-time.After(shutdownDrain + 5*time.Second):
		t.Fatalf("no exit %v after SIGTERM", shutdownDrain+5*time.Second)
	}
	took := time.Since(start)
	if exitErr != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", exitErr, p.logs.String())
	}
	testenv.Receive(t, done, crowdBudget+time.Minute, "the paced crowd ends")
	// Answers after the listener closed are connection errors; every answer received is a
	// contract answer, and the invariants hold.
	allowOnly(t, c, "201", "409", "410", "transport error")
	c.verify(t, st.dsn)
	next := startInstance(t, st.env(map[string]string{"LOCK_WAIT": "300ms"}))
	rec := recoveryTime(t, next.base, 2*time.Second) // no lock left to wait out
	report(t, "SIGTERM to a process during a crowd",
		fmt.Sprintf("in-flight requests completed, exit 0 after %v, locks released at once (%s)", took.Round(time.Millisecond), c), rec)
}

// errorBody decodes the API's error body.
func errorBody(t *testing.T, b []byte) (code, message string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return e.Error.Code, e.Error.Message
}

// PostgreSQL freezes (SIGSTOP) with a batch's statement sent and stays silent through the
// transaction timeout, the cancellation and the re-read: whether the coupon was stored is not
// known, and the answer says so (503 OUTCOME_UNKNOWN, never "nothing was issued"). Once
// PostgreSQL answers again, the user's retry gets the truth, and the wallet agrees.
func TestFaultPostgresFrozenOutcomeUnknown(t *testing.T) {
	pg := testenv.NewPostgres(t)
	st := &stack{dsn: pg.CreateDatabase(t), redis: testenv.NewRedisNodes(t, 1)}
	in := startInstance(t, st.env(nil))
	issue := func(u uuid.UUID) answer {
		return do(t, "POST", in.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+u.String()+`"}`)
	}
	if a := issue(uuid.New()); a.status != http.StatusCreated { // connections made, coupon cached
		t.Fatalf("warm-up: %d %s", a.status, a.body)
	}
	pg.Pause(t)
	paused := true
	defer func() {
		if paused {
			pg.Resume(t)
		}
	}()
	user := uuid.New()
	start := time.Now()
	a := issue(user)
	took := time.Since(start)
	pg.Resume(t)
	paused = false
	if a.status != http.StatusServiceUnavailable || a.errorCode() != "OUTCOME_UNKNOWN" {
		t.Fatalf("with PostgreSQL frozen: %d %s after %v, want 503 OUTCOME_UNKNOWN", a.status, a.body, took)
	}
	// The retry tells the truth: 201 if the first attempt did not commit, 409 if it did.
	var retry answer
	testenv.WaitFor(t, 20*time.Second, "a retry answered 201 or 409 once PostgreSQL is back", func() bool {
		retry = issue(user)
		return retry.status == http.StatusCreated || retry.status == http.StatusConflict
	})
	var rows int
	if err := db(t, st.dsn).QueryRow(context.Background(), `SELECT count(*) FROM coupon_wallet WHERE user_id = $1`, user).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("after OUTCOME_UNKNOWN and a retry answered %d, the user has %d rows", retry.status, rows)
	}
	checkInvariants(t, st.dsn, "C0001", 2, nil)
	if !t.Failed() {
		t.Logf("REPORT|PostgreSQL frozen (SIGSTOP) with a batch's statement sent|503 OUTCOME_UNKNOWN after %v (transaction timeout, cancellation, re-read), never \"nothing was issued\"; the retry once PostgreSQL answered: %d|%v|OK: one row for the user, no over-issue, every other answer true",
			took.Round(100*time.Millisecond), retry.status, time.Duration(0))
	}
}
