package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"couponsvc/internal/peer"
	"couponsvc/internal/seal"
	"couponsvc/internal/testenv"
	"couponsvc/lock"

	"github.com/google/uuid"
)

// The deployed shape: several couponsvc processes, in their default configuration, behind an
// nginx configured like ingress-nginx, against one PostgreSQL and three Redis nodes; faults
// that Kubernetes deployments see (a pod killed, a pod cut off from Redis, a Redis blip).

// fleet is N couponsvc processes behind one nginx.
type fleet struct {
	procs []*process
	proxy *testenv.Nginx
}

func startFleet(t *testing.T, st *stack, n int, env func(i int) map[string]string) *fleet {
	t.Helper()
	f := &fleet{}
	var upstreams []string
	for i := range n {
		e := st.env(nil)
		if env != nil {
			for k, v := range env(i) {
				e[k] = v
			}
		}
		p := startProcess(t, e)
		f.procs = append(f.procs, p)
		upstreams = append(upstreams, strings.TrimPrefix(p.base, "http://"))
	}
	f.proxy = testenv.NewNginx(t, upstreams)
	return f
}

// ownerOf returns the index of the process that owns coupon code (holds its lock), or -1.
func (f *fleet) ownerOf(t *testing.T, st *stack, code string) int {
	t.Helper()
	probe := lock.New(lock.NewNodes(testenv.Addrs(st.redis), "", ""))
	defer probe.Close()
	addr, _, err := probe.Mutex("coupon:" + code).Holder(context.Background())
	if err != nil {
		t.Fatalf("owner of %s: %v", code, err)
	}
	addr, _, _ = strings.Cut(addr, ",") // the holder info's MAC (peer.HolderInfo)
	for i, p := range f.procs {
		if p.base == "http://"+addr {
			return i
		}
	}
	return -1
}

// runOneCouponCrowd sends n distinct users' requests for coupon code through base, with the
// given number of clients, paced over about dur.
func runOneCouponCrowd(base, code string, n, clients int, dur time.Duration) *pacedCrowd {
	c := newPacedCrowd(n)
	for i := range c.users {
		c.users[i], c.codes[i] = uuid.New(), code
	}
	c.run([]string{base}, clients, dur)
	return c
}

// verifyOne checks PostgreSQL against the answers for one coupon: never over the stock, one row per user, every
// 201's row present with its id, every 409 a holder, no 410 while stock remained, and a row
// only for a user answered 201, or whose request died with its instance (nginx's 502, or a
// transport error): the dead instance may have committed it before it could answer. With
// more distinct users than stock asking, the whole stock is issued.
func (c *pacedCrowd) verifyOne(t *testing.T, dsn, code string, stock int, before ...uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	conn := db(t, dsn)
	var issued, total int
	if err := conn.QueryRow(ctx, `SELECT issued_quantity, total_quantity FROM coupon WHERE code = $1`, code).Scan(&issued, &total); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT w.id, w.user_id FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id WHERE c.code = $1`, code)
	if err != nil {
		t.Fatal(err)
	}
	inDB := map[uuid.UUID]uuid.UUID{}
	for rows.Next() {
		var id, user uuid.UUID
		if err := rows.Scan(&id, &user); err != nil {
			t.Fatal(err)
		}
		if _, dup := inDB[user]; dup {
			t.Fatalf("%s: user %s has two rows", code, user)
		}
		inDB[user] = id
	}
	if issued != len(inDB) || issued > total || total != stock {
		t.Fatalf("%s: issued_quantity %d, rows %d, total %d (stock %d)", code, issued, len(inDB), total, stock)
	}
	if len(c.users)+len(before) > stock && issued != stock {
		t.Errorf("%s: %d of %d issued while %d distinct users asked (%v)", code, issued, stock, len(c.users), c.summary())
	}
	// What each user was told: 201 in any answer, or else a request that died with its
	// instance (nginx's 502, a transport error), or else the last answer.
	answered := map[uuid.UUID]int{}
	for _, u := range before { // issued before the crowd
		answered[u] = http.StatusCreated
	}
	for i, a := range c.answers {
		u := c.users[i]
		status := a.status
		if c.errs[i] != nil {
			status = -1
		}
		switch prev := answered[u]; {
		case prev == http.StatusCreated:
		case status == http.StatusCreated, status == -1, status == http.StatusBadGateway, prev == 0, prev == http.StatusConflict:
			answered[u] = status
		}
		switch a.status {
		case http.StatusCreated:
			if id := walletID(t, a); inDB[u] != id {
				t.Fatalf("%s: user %s got 201 with wallet %s, row has %s", code, u, id, inDB[u])
			}
		case http.StatusConflict:
			if _, ok := inDB[u]; !ok {
				t.Fatalf("%s: 409 for user %s who holds no coupon", code, u)
			}
		case http.StatusGone:
			if issued < total {
				t.Fatalf("%s: 410 while %d of %d remain", code, total-issued, total)
			}
		}
	}
	for u := range inDB {
		switch answered[u] {
		case http.StatusCreated, http.StatusBadGateway, -1:
		default:
			t.Fatalf("%s: user %s has a row but was never answered 201 (last answer %d)", code, u, answered[u])
		}
	}
}

// issueGaps returns, from the wallet rows of code, the longest time without an issue between
// from and the last issue.
func issueGap(t *testing.T, dsn, code string, from time.Time) (gap time.Duration, last time.Time) {
	t.Helper()
	rows, err := db(t, dsn).Query(context.Background(),
		`SELECT w.issued_at FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id WHERE c.code = $1 AND w.issued_at >= $2 ORDER BY 1`, code, from)
	if err != nil {
		t.Fatal(err)
	}
	prev := from
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			t.Fatal(err)
		}
		gap = max(gap, at.Sub(prev))
		prev, last = at, at
	}
	return gap, last
}

// TestFaultOwnerKilledMidCrowd: three instances behind nginx, a crowd on one coupon, and the
// instance that owns the coupon (holds its lock; the others forward to it) killed with SIGKILL
// in the middle of it, in the default configuration (the 1.5 s watchdog lease). The others
// take the coupon over within 2 s, the whole stock is issued, and the only 5xx answers are
// nginx's 502 for the killed instance's own requests in flight.
func TestFaultOwnerKilledMidCrowd(t *testing.T) {
	st := newStack(t, 3)
	const code, stock, users = "KILL", 3000, 4500
	f := startFleet(t, st, 3, nil)
	createCoupon(t, st.dsn, code, stock)

	var killedAt time.Time
	victim := -1
	done := make(chan *pacedCrowd, 1)
	go func() { done <- runOneCouponCrowd(f.proxy.URL, code, users, 200, 2500*time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for victim < 0 {
		time.Sleep(50 * time.Millisecond)
		if time.Now().After(deadline) {
			t.Fatalf("no instance owns %s 5 s into the crowd", code)
		}
		victim = f.ownerOf(t, st, code)
	}
	time.Sleep(300 * time.Millisecond) // well into the crowd
	if err := f.procs[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt = time.Now()
	c := testenv.Receive(t, done, time.Minute, "the crowd ends")
	sum := c.summary()
	for k, n := range sum {
		if !slices.Contains([]string{"201", "409", "410", "502", "transport error"}, k) {
			t.Errorf("%d answers %s (all: %v)", n, k, sum)
		}
	}
	c.verifyOne(t, st.dsn, code, stock)
	gap, last := issueGap(t, st.dsn, code, killedAt.Add(-100*time.Millisecond))
	if gap > 2*time.Second {
		t.Errorf("no coupon issued for %v after the owner was killed; want under 2 s", gap)
	}
	t.Logf("owner (instance %d) killed: answers %v; longest pause in issuing after the kill %v; last issue %v after the kill",
		victim, sum, gap.Round(time.Millisecond), last.Sub(killedAt).Round(time.Millisecond))
	report(t, "the instance owning a hot coupon killed (SIGKILL) mid-crowd, 3 instances behind nginx, default 1.5 s watchdog lease",
		fmt.Sprintf("the others took the coupon over: longest pause in issuing %v, the whole stock issued, 5xx only nginx's 502 for the killed instance's requests in flight (%v)",
			gap.Round(time.Millisecond), sum), gap)
}

// TestFaultRedisQuorumBlip: two of three Redis nodes frozen for about one request's time and
// resumed; a fresh user's request every 100 ms is issued within 1 s of their return, every
// round, and nothing of the failed acquisitions outlives that: no lock key is left on any node.
func TestFaultRedisQuorumBlip(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(nil))
	var worst time.Duration
	for round := 1; round <= 4; round++ {
		time.Sleep(2 * time.Second) // the instance has let go of C0001 since the last round
		st.redis[0].Pause(t)
		st.redis[1].Pause(t)
		go send("POST", in.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+uuid.NewString()+`"}`)
		time.Sleep(150 * time.Millisecond)
		st.redis[0].Resume(t)
		st.redis[1].Resume(t)
		back := time.Now()
		for {
			a, err := send("POST", in.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+uuid.NewString()+`"}`)
			if err == nil && a.status == http.StatusCreated {
				break
			}
			if time.Since(back) > 10*time.Second {
				t.Fatalf("round %d: no 201 within 10 s of the nodes' return (last %d %s %v)", round, a.status, a.body, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		took := time.Since(back)
		worst = max(worst, took)
		if took > time.Second {
			t.Errorf("round %d: first 201 %v after the nodes returned; want within 1 s", round, took)
		}
	}
	// The owner lets go 500 ms after its last request; then no lock key may be left anywhere.
	waitForNoLockKeys(t, st, 3*time.Second)
	report(t, "2 of 3 Redis nodes frozen (SIGSTOP) for 150 ms during an acquisition, 4 rounds",
		fmt.Sprintf("first 201 at most %v after the nodes returned; no lock key left behind", worst.Round(time.Millisecond)), worst)
}

func waitForNoLockKeys(t *testing.T, st *stack, within time.Duration) {
	t.Helper()
	testenv.WaitFor(t, within, "no lock key left on any Redis node", func() bool {
		for _, r := range st.redis {
			if keys, err := r.Client(t).Keys(context.Background(), "lock:coupon:*").Result(); err != nil || len(keys) > 0 {
				return false
			}
		}
		return true
	})
}

// relay is a TCP relay (socat) to a Redis node, whose process group can be frozen: the
// connections through it then go unanswered, as behind a cut link.
type relay struct {
	addr string
	cmd  *exec.Cmd
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	bin, err := exec.LookPath("socat")
	if err != nil {
		t.Fatalf("socat not found: install it with: sudo apt-get install -y socat")
	}
	port := testenv.FreePort(t)
	r := &relay{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	r.cmd = exec.Command(bin, fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr", port), "TCP:"+target)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGCONT)
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		_ = r.cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", r.addr, time.Second); err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay to %s not listening within 5 s", target)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cut freezes the relay and every connection through it.
func (r *relay) cut(t *testing.T) {
	if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

// TestFaultInstancePartitionedFromRedis: three instances behind nginx; instance 2 reaches two
// of the three Redis nodes through relays that are cut 0.3 s into a crowd, so it can no
// longer take any lock. It hands its share of the crowd to the owner (or to another instance),
// so the whole stock is issued and at most 1% of the crowd is answered 503.
func TestFaultInstancePartitionedFromRedis(t *testing.T) {
	for _, victimOwns := range []bool{false, true} {
		t.Run(map[bool]string{false: "owner elsewhere", true: "cut-off instance owns the coupon"}[victimOwns], func(t *testing.T) {
			st := newStack(t, 3)
			const code, stock, users = "CUT", 5000, 6500
			addrs := testenv.Addrs(st.redis)
			relays := []*relay{startRelay(t, addrs[0]), startRelay(t, addrs[1])}
			const victim = 1
			f := startFleet(t, st, 3, func(i int) map[string]string {
				if i != victim {
					return nil
				}
				return map[string]string{"REDIS_ADDRS": relays[0].addr + "," + relays[1].addr + "," + addrs[2]}
			})
			createCoupon(t, st.dsn, code, stock)
			// Make the victim (or another instance) the owner before the crowd.
			first := f.procs[(victim+1)%3]
			if victimOwns {
				first = f.procs[victim]
			}
			firstUser := uuid.New()
			if a, err := send("POST", first.base+"/api/v1/coupons/"+code+"/issue", `{"userId":"`+firstUser.String()+`"}`); err != nil || a.status != 201 {
				t.Fatalf("first issue: %v %d %s", err, a.status, a.body)
			}
			done := make(chan *pacedCrowd, 1)
			go func() { done <- runOneCouponCrowd(f.proxy.URL, code, users, 200, 4*time.Second) }()
			time.Sleep(300 * time.Millisecond)
			owner := f.ownerOf(t, st, code)
			cutAt := time.Now()
			for _, r := range relays {
				r.cut(t)
			}
			c := testenv.Receive(t, done, time.Minute, "the crowd ends")
			sum := c.summary()
			n503 := 0
			for k, n := range sum {
				if strings.HasPrefix(k, "503") {
					n503 += n
				}
				if !slices.Contains([]string{"201", "409", "410", "503 LOCK_TIMEOUT", "503 UNAVAILABLE"}, k) {
					t.Errorf("%d answers %s (all: %v)", n, k, sum)
				}
			}
			if n503*100 > users {
				t.Errorf("%d of %d answers 503; at most 1%% allowed (all: %v)", n503, users, sum)
			}
			c.verifyOne(t, st.dsn, code, stock, firstUser)
			gap, _ := issueGap(t, st.dsn, code, cutAt)
			t.Logf("owner at the cut: instance %d; answers %v; longest pause in issuing after the cut %v", owner, sum, gap.Round(time.Millisecond))
			if testing.Verbose() {
				m := string(do(t, "GET", f.procs[victim].base+"/metrics", "").body)
				for _, l := range strings.Split(m, "\n") {
					if strings.HasPrefix(l, "couponsvc_peer_batches_total") || strings.HasPrefix(l, "couponsvc_issue_total") || strings.HasPrefix(l, "couponsvc_lock_hold_seconds_count") {
						t.Log("cut-off instance:", l)
					}
				}
			}
			report(t, fmt.Sprintf("1 of 3 instances cut off from 2 of 3 Redis nodes mid-crowd (%s)", t.Name()[strings.LastIndex(t.Name(), "/")+1:]),
				fmt.Sprintf("its share of the crowd was served through the owner: %d of %d answers 503, the whole stock issued (%v)", n503, users, sum), gap)
		})
	}
}

// The peer endpoint serves other instances, never the Ingress: a request that came through
// nginx (X-Forwarded-For and X-Real-IP set, as ingress-nginx always sets them) is refused,
// even one whose path an Ingress rule would not have matched had it not been crafted.
func TestPeerEndpointRefusesIngressTraffic(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	proxy := testenv.NewNginx(t, []string{strings.TrimPrefix(in.base, "http://")})
	body := `{"from":"127.0.0.1:1","coupons":[{"code":"C0001","relay":true,"requests":[{"u":"` + uuid.NewString() + `","a":` + fmt.Sprint(time.Now().UnixNano()) + `}]}]}`
	if a := do(t, "POST", proxy.URL+"/internal/v1/batch", body); a.status != http.StatusNotFound {
		t.Errorf("through the Ingress: %d %s, want 404", a.status, a.body)
	}
	if a := do(t, "POST", proxy.URL+"/api/v1/..%2F..%2Finternal/v1/batch", body); a.status == http.StatusOK {
		t.Errorf("through the Ingress with an encoded path: %d %s", a.status, a.body)
	}
	checkInvariants(t, st.dsn, "C0001", 0, nil) // nothing issued by those
	// From another instance (no proxy headers) it serves: a relayed request is issued.
	req, _ := http.NewRequest("POST", in.base+peer.Route, strings.NewReader(body))
	req.Header.Set(peer.MACHeader, seal.Key(st.env(nil)["CLUSTER_KEY"]).Sum([]byte(peer.Route), []byte(body)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(reply), `"r":"issued"`) {
		t.Errorf("from a peer: %d %s", resp.StatusCode, reply)
	}
	checkInvariants(t, st.dsn, "C0001", 1, nil)
}

// A forwarded batch whose reply is lost (the owner issued it, then the connection broke) is
// sent again; the user whose coupon the first attempt stored is answered 201 with that row,
// not 409, and nothing is issued twice.
func TestForwardReplyLost(t *testing.T) { testForwardReplyLost(t, 0) }

// The same when the reply is lost only after the request's deadline (LOCK_WAIT) has passed, as
// when an owner is slow under load: the request is not told 503 LOCK_TIMEOUT ("nothing was
// issued") while its row is stored, but 201 with that row.
func TestForwardReplyLostPastDeadline(t *testing.T) { testForwardReplyLost(t, 1500*time.Millisecond) }

func testForwardReplyLost(t *testing.T, hold time.Duration) {
	st := newStack(t, 1)
	// The owner is reached through a proxy that serves the first forwarded batch and then
	// breaks the connection instead of passing the reply on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var target atomic.Pointer[url.URL]
	var calls atomic.Int32
	lost := make(chan string, 1) // the reply that never reached the sender
	lossy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No X-Forwarded-For: to the owner this is another instance calling.
		rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target.Load()) }}
		if calls.Add(1) > 1 {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r) // served by the owner, reply thrown away
		time.Sleep(hold)
		lost <- rec.Body.String()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})}
	go lossy.Serve(ln)
	t.Cleanup(func() { lossy.Close() })
	owner := startInstance(t, st.env(map[string]string{"ADVERTISE_ADDR": ln.Addr().String()}))
	u, _ := url.Parse(owner.base)
	target.Store(u)
	other := startInstance(t, st.env(map[string]string{"LOCK_WAIT": "1s"}))

	// The owner takes the coupon's lock and keeps it while requests come (ownerLinger).
	first := do(t, "POST", owner.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+uuid.NewString()+`"}`)
	if first.status != http.StatusCreated {
		t.Fatalf("first issue: %d %s", first.status, first.body)
	}
	user := uuid.New()
	a := do(t, "POST", other.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+user.String()+`"}`)
	select {
	case reply := <-lost:
		if !strings.Contains(reply, `"r":"issued"`) {
			t.Fatalf("the lost reply %s: the owner did not issue the first attempt; the test needs it to", reply)
		}
	default:
		t.Fatalf("nothing was forwarded to the owner (answer %d %s)", a.status, a.body)
	}
	if a.status != http.StatusCreated {
		t.Fatalf("after the lost reply: %d %s, want 201 with the row the first attempt stored", a.status, a.body)
	}
	checkInvariants(t, st.dsn, "C0001", 2, map[uuid.UUID]uuid.UUID{user: walletID(t, a), userOf(t, first): walletID(t, first)})
	// The same user asking again is told 409: the 201 above was the only one.
	if again := do(t, "POST", other.base+"/api/v1/coupons/C0001/issue", `{"userId":"`+user.String()+`"}`); again.status != http.StatusConflict {
		t.Errorf("asking again: %d %s, want 409", again.status, again.body)
	}
}

func userOf(t *testing.T, a answer) uuid.UUID {
	t.Helper()
	var e struct{ UserID uuid.UUID }
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("201 body %s: %v", a.body, err)
	}
	return e.UserID
}
