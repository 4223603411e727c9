package main

import (
	"bufio"
	"bytes"
	"context"
	"couponsvc/internal/testenv"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Hostile inputs against a real instance: each is refused with a clear answer and leaves
// nothing behind, and the service keeps serving others. Each logs a
// "HOSTILE|input|answer" line for docs/RELIABILITY.md.
func TestHostileInputs(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	addr := strings.TrimPrefix(in.base, "http://")
	issueURL := in.base + "/api/v1/coupons/A0001/issue"
	fresh := func() string { return `{"userId":"` + uuid.NewString() + `"}` }

	for _, tc := range []struct {
		name   string
		req    func() (*http.Request, error)
		status int
		code   string
	}{
		{"1 MiB body", func() (*http.Request, error) {
			return http.NewRequest("POST", issueURL, strings.NewReader(`{"userId":"`+strings.Repeat("a", 1<<20)+`"}`))
		}, 400, "INVALID_REQUEST"},
		{"deeply nested JSON (10,000 levels)", func() (*http.Request, error) {
			return http.NewRequest("POST", issueURL, strings.NewReader(strings.Repeat(`{"a":`, 10000)))
		}, 400, "INVALID_REQUEST"},
		{"duplicated JSON key", func() (*http.Request, error) {
			return http.NewRequest("POST", issueURL, strings.NewReader(`{"userId":"`+uuid.NewString()+`","userId":"`+uuid.NewString()+`"}`))
		}, 400, "INVALID_REQUEST"},
		{"the same key in two cases (USERID after userId)", func() (*http.Request, error) {
			return http.NewRequest("POST", issueURL, strings.NewReader(`{"userId":"`+uuid.NewString()+`","USERID":"`+uuid.NewString()+`"}`))
		}, 400, "INVALID_REQUEST"},
		{"no Content-Type", func() (*http.Request, error) {
			r, err := http.NewRequest("POST", issueURL, strings.NewReader(fresh()))
			if err == nil {
				r.Header.Set("Content-Type", "none") // replaced by an absent header below
			}
			return r, err
		}, 400, "INVALID_REQUEST"},
		{"Content-Type text/plain", func() (*http.Request, error) {
			r, err := http.NewRequest("POST", issueURL, strings.NewReader(fresh()))
			if err == nil {
				r.Header.Set("Content-Type", "text/plain")
			}
			return r, err
		}, 400, "INVALID_REQUEST"},
		{"nil UUID userId", func() (*http.Request, error) {
			return http.NewRequest("POST", issueURL, strings.NewReader(`{"userId":"00000000-0000-0000-0000-000000000000"}`))
		}, 400, "INVALID_REQUEST"},
		{"SQL in the coupon code", func() (*http.Request, error) {
			return http.NewRequest("POST", in.base+"/api/v1/coupons/A0001';DROP%20TABLE%20coupon;--/issue", strings.NewReader(fresh()))
		}, 404, "COUPON_NOT_FOUND"},
		{"path traversal in the coupon code", func() (*http.Request, error) {
			return http.NewRequest("POST", in.base+"/api/v1/coupons/..%2F..%2Fetc%2Fpasswd/issue", strings.NewReader(fresh()))
		}, 404, "COUPON_NOT_FOUND"},
		{"code of 10,000 characters", func() (*http.Request, error) {
			return http.NewRequest("POST", in.base+"/api/v1/coupons/"+strings.Repeat("A", 10000)+"/issue", strings.NewReader(fresh()))
		}, 404, "COUPON_NOT_FOUND"},
		{"100 KiB header", func() (*http.Request, error) {
			r, err := http.NewRequest("POST", issueURL, strings.NewReader(fresh()))
			if err == nil {
				r.Header.Set("X-Filler", strings.Repeat("x", 100<<10))
			}
			return r, err
		}, 431, ""},
	} {
		req, err := tc.req()
		if err != nil {
			t.Fatal(err)
		}
		switch req.Header.Get("Content-Type") {
		case "":
			req.Header.Set("Content-Type", "application/json")
		case "none":
			req.Header.Del("Content-Type")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a := answer{resp.StatusCode, resp.Header, body}
		if a.status != tc.status || (tc.code != "" && a.errorCode() != tc.code) {
			t.Errorf("%s: %d %.200s, want %d %s", tc.name, a.status, a.body, tc.status, tc.code)
			continue
		}
		what := fmt.Sprintf("%d %s", a.status, tc.code)
		if tc.code != "" {
			_, msg := errorBody(t, a.body)
			what += ": " + msg
		} else {
			what += " (net/http, before any handler)"
		}
		if len(what) > 120 {
			what = what[:120] + "…"
		}
		t.Logf("HOSTILE|%s|%s", tc.name, what)
	}
	checkInvariants(t, st.dsn, "A0001", 0, nil)

	// A client that sends half a header and stalls is cut by ReadHeaderTimeout (5 s).
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /api/v1/coupons/A0001/issue HTTP/1.1\r\nHost: x\r\n")
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err = io.ReadAll(conn)
	cut := time.Since(start)
	conn.Close()
	if err != nil || cut > 8*time.Second {
		t.Errorf("slow-header client: cut after %v (%v)", cut, err)
	} else {
		t.Logf("HOSTILE|client sending half a header, then nothing|connection closed by the server after %v (ReadHeaderTimeout 5 s)", cut.Round(100*time.Millisecond))
	}

	// Thousands of idle connections do not stop the service from answering others.
	var idle []net.Conn
	for i := 0; i < 3000; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	start = time.Now()
	a := in.issue(t, "B0001", uuid.New())
	took := time.Since(start)
	for _, c := range idle {
		c.Close()
	}
	if a.status != 201 || took > 2*time.Second {
		t.Errorf("with 3,000 idle connections: %d after %v", a.status, took)
	} else {
		t.Logf("HOSTILE|3,000 idle TCP connections held open|a normal issue request answered 201 in %v meanwhile", took.Round(time.Millisecond))
	}

	// A pipelined flood on one connection gets answers in order, none lost.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < 100; i++ {
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	r := bufio.NewReader(c)
	for i := 0; i < 100; i++ {
		resp, err := http.ReadResponse(r, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("pipelined request %d not answered 200 within 30s of the flood: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	t.Logf("HOSTILE|100 requests pipelined on one connection|100 answers 200, in order")
}

// A client that hangs up cancels its request's PostgreSQL work: a wallet read stuck behind a
// table lock is cancelled on the server when its client goes, not left waiting for nobody.
func TestClientHangingUpCancelsItsQuery(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	ctx := context.Background()
	lockTable(t, st.dsn, "coupon_wallet")
	watcher := db(t, st.dsn)
	waiting := func() int {
		var n int
		if err := watcher.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%FROM coupon_wallet w JOIN coupon c%user_id = $1%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rctx, hangUp := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(rctx, "GET", in.base+"/api/v1/users/"+uuid.NewString()+"/coupons", nil)
	answered := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	testenv.WaitFor(t, 5*time.Second, "the wallet read waiting behind the table lock", func() bool { return waiting() == 1 })
	hangUp()
	testenv.Receive(t, answered, 5*time.Second, "the client's call to return")
	testenv.WaitFor(t, 5*time.Second, "the wallet read cancelled on the server after its client hung up (the lock is still held)",
		func() bool { return waiting() == 0 })
}

// With CLUSTER_KEY, nothing that can reach Redis or an instance's port can speak for an
// instance: a made-up fact on the facts bus ("this user holds A0001") and a batch posted to the
// peer endpoint change nothing. Without the key (one instance, a demo) the same fact is
// believed, which shows the forgery reaches the instance.
func TestClusterKeyRefusesForgeries(t *testing.T) {
	forgeFact := func(t *testing.T, st *stack, victim uuid.UUID) {
		t.Helper()
		for _, r := range st.redis {
			// "<notice id> <MAC> <sender> <code> <sold out> <users>", the MAC made up.
			msg := uuid.NewString() + " - forger A0001 - " + victim.String()
			if err := r.Client(t).Publish(context.Background(), "couponsvc:coupon-facts", msg).Err(); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond) // pub/sub delivers within milliseconds
	}
	t.Run("with the key", func(t *testing.T) {
		st := newStack(t, 1)
		in := startInstance(t, st.env(nil)) // with the tests' CLUSTER_KEY
		victim := uuid.New()
		forgeFact(t, st, victim)
		if a := do(t, "POST", in.base+"/api/v1/coupons/A0001/issue", `{"userId":"`+victim.String()+`"}`); a.status != http.StatusCreated {
			t.Fatalf("after a forged fact: %d %s, want 201", a.status, a.body)
		}
		t.Logf("HOSTILE|a made-up fact published on the facts bus in Redis (\"this user holds A0001\"), CLUSTER_KEY set|dropped (no MAC): the user was then issued A0001, 201")
		body := `{"from":"127.0.0.1:1","coupons":[{"code":"A0001","relay":true,"requests":[{"u":"` + uuid.NewString() + `","a":` + fmt.Sprint(time.Now().UnixNano()) + `}]}]}`
		for _, mac := range []string{"", "-", strings.Repeat("0", 64)} {
			req, _ := http.NewRequest("POST", in.base+"/internal/v1/batch", strings.NewReader(body))
			req.Header.Set("X-Couponsvc-Mac", mac)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("peer batch with MAC %q: %d, want 401", mac, resp.StatusCode)
			}
		}
		checkInvariants(t, st.dsn, "A0001", 1, nil) // the victim's coupon only
		t.Logf("HOSTILE|a batch posted to the pod-to-pod endpoint without, or with a wrong, MAC|401 UNAUTHORIZED, nothing issued")
	})
	t.Run("without the key the forgery is believed", func(t *testing.T) {
		st := newStack(t, 1)
		env := st.env(nil)
		delete(env, "CLUSTER_KEY")
		in := startInstance(t, env)
		victim := uuid.New()
		forgeFact(t, st, victim)
		if a := do(t, "POST", in.base+"/api/v1/coupons/A0001/issue", `{"userId":"`+victim.String()+`"}`); a.status != http.StatusConflict {
			t.Fatalf("without CLUSTER_KEY: %d %s; the forged fact did not reach the instance, so the test above proves nothing", a.status, a.body)
		}
	})
}

// `serve -h` and a mistyped flag print the usage: never the secrets the environment holds.
func TestSecretsNeverPrinted(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL":   "postgres://app:db-s3cret@db:5432/coupon",
		"REDIS_PASSWORD": "redis-s3cret",
		"ADMIN_TOKEN":    "admin-s3cret-admin-s3cret-admin-s3cret",
		"CLUSTER_KEY":    "cluster-s3cret-cluster-s3cret-cluster",
	}
	for _, args := range [][]string{{"-h"}, {"--no-such-flag"}, {"--lock-wait", "soon"}} {
		var out bytes.Buffer
		cfg, err := loadConfig("serve", args, func(k string) string { return env[k] }, &out)
		text := out.String()
		if err != nil {
			text += err.Error()
		}
		if strings.Contains(text, "s3cret") {
			t.Errorf("serve %v printed a secret:\n%s", args, text)
		}
		if args[0] == "--lock-wait" && cfg.DatabaseURL != "" {
			t.Errorf("a bad flag still returned a configuration")
		}
	}
	// The values are still taken from the environment.
	cfg, err := loadConfig("serve", nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil || cfg.DatabaseURL != env["DATABASE_URL"] || cfg.AdminToken != env["ADMIN_TOKEN"] || string(cfg.ClusterKey) != env["CLUSTER_KEY"] {
		t.Fatalf("secrets from the environment: %+v %v", cfg, err)
	}
	if _, err := loadConfig("serve", nil, func(k string) string { return map[string]string{"CLUSTER_KEY": "short"}[k] }, io.Discard); err == nil {
		t.Error("a CLUSTER_KEY of 5 bytes accepted")
	}
}

// A flood of issue requests for made-up (well-formed) coupon codes costs PostgreSQL almost
// nothing: the instance knows every coupon and answers 404 from memory, beyond a small budget
// of lookups for a coupon created a moment ago elsewhere. Here PostgreSQL cannot answer any
// lookup (the coupon table is locked), and still the flood is answered at once.
func TestUnknownCodesAnsweredWithoutQuery(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	lockTable(t, st.dsn, "coupon")
	const flood = 300
	quick := &http.Client{Timeout: time.Second}
	var answered404 atomic.Int32
	var wg sync.WaitGroup
	for i := range flood {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/coupons/FAKE%06d/issue", in.base, i), strings.NewReader(`{"userId":"`+uuid.NewString()+`"}`))
			req.Header.Set("Content-Type", "application/json")
			if resp, err := quick.Do(req); err == nil {
				if resp.StatusCode == http.StatusNotFound {
					answered404.Add(1)
				}
				resp.Body.Close()
			}
		})
	}
	wg.Wait() // bounded: each request gives up after 1 s
	if n := answered404.Load(); n < flood-40 {
		t.Fatalf("%d of %d made-up codes answered 404 within 1 s while PostgreSQL could not answer a lookup; the others waited for one", n, flood)
	}
	t.Logf("HOSTILE|%d issue requests for made-up coupon codes, PostgreSQL unable to answer|%d answered 404 COUPON_NOT_FOUND within 1 s from memory", flood, answered404.Load())
}

// lockTable holds an ACCESS EXCLUSIVE lock on table until the test ends: every query on it waits.
func lockTable(t *testing.T, dsn, table string) {
	t.Helper()
	ctx := context.Background()
	blocker, err := db(t, dsn).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blocker.Rollback(ctx) })
	if _, err := blocker.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
}

// Clients polling the coupon and their wallets in a loop while the coupon is issued: the
// polls cost PostgreSQL a bounded share (coupon reads from the instance's snapshot, wallet
// reads on at most a quarter of the pool and MAX_INFLIGHT at once), and every issue is served.
func TestPollingDoesNotStarveIssuing(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(map[string]string{"MAX_INFLIGHT": "64"}))
	createCoupon(t, st.dsn, "POLLED", 300)
	stop := make(chan struct{})
	var polls, tooMany, failed atomic.Int64
	var pollers sync.WaitGroup
	for i := range 200 {
		pollers.Go(func() {
			user := uuid.NewString()
			for {
				select {
				case <-stop:
					return
				default:
				}
				path := "/api/v1/coupons/POLLED"
				if i%2 == 1 {
					path = "/api/v1/users/" + user + "/coupons"
				}
				a, err := send("GET", in.base+path, "")
				switch {
				case err != nil || a.status >= 500:
					failed.Add(1)
				case a.status == 429:
					tooMany.Add(1)
				}
				polls.Add(1)
			}
		})
	}
	start := time.Now()
	answers, _ := crowd(t, 300, 50, func(int) answer { return in.issue(t, "POLLED", uuid.New()) })
	took := time.Since(start)
	close(stop)
	testenv.Wait(t, &pollers, 30*time.Second, "the pollers stop")
	if got := statusCounts(answers); got[201] != 300 {
		t.Errorf("issues while 200 clients polled: %v, want 300 × 201", got)
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d polls failed or got a 5xx", n)
	}
	checkInvariants(t, st.dsn, "POLLED", 300, nil)
	t.Logf("HOSTILE|200 clients polling GET /api/v1/coupons/{code} and their wallets in a loop (%d polls, %d answered 429) while 300 users asked for a coupon of 300|all 300 issued in %v, no poll failed", polls.Load(), tooMany.Load(), took.Round(time.Millisecond))
}

// redisACLArgs are the redis-server arguments k8s/base/redis.yaml runs the nodes with (the
// manifest test checks they are the same): the default user off, and the API's user limited to
// the lock's keys and release channels and the service's channels, without the dangerous or
// admin commands.
var redisACLArgs = []string{"--user", "default", "off",
	"--user", "couponsvc", "on", ">acl-test-password", "~lock:*", "&lock:*", "&couponsvc:*", "+@all", "-@dangerous", "-@admin"}

// Two instances on Redis nodes that admit only the ACL user k8s/ gives them issue a crowd as
// usual (locks, fencing, release channels, facts and change notices all within its rights),
// and that user can do nothing else: no other key or channel, no FLUSHALL, CONFIG or KEYS.
func TestRedisACLUser(t *testing.T) {
	st := &stack{dsn: testenv.Database(t)}
	for range 3 {
		st.redis = append(st.redis, testenv.NewRedisWith(t, redisACLArgs...))
	}
	env := st.env(map[string]string{"REDIS_USERNAME": "couponsvc", "REDIS_PASSWORD": "acl-test-password"})
	ins := []*instance{startInstance(t, env), startInstance(t, env)}
	createCoupon(t, st.dsn, "ACL1", 200)
	answers, _ := crowd(t, 400, 40, func(i int) answer { return ins[i%2].issue(t, "ACL1", uuid.New()) })
	if got := statusCounts(answers); got[201] != 200 || got[410] != 200 {
		t.Errorf("a crowd of 400 on a stock of 200 with the ACL user: %v, want 200 × 201 and 200 × 410", got)
	}
	checkInvariants(t, st.dsn, "ACL1", 200, nil)
	for _, in := range ins {
		if logs := in.logs.String(); strings.Contains(logs, "NOPERM") || strings.Contains(logs, "NOAUTH") {
			t.Errorf("%s logged a refused Redis command:\n%s", in.base, logs)
		}
	}

	ctx := context.Background()
	user := redis.NewClient(&redis.Options{Addr: st.redis[0].Addr, Username: "couponsvc", Password: "acl-test-password"})
	defer user.Close()
	if err := user.Ping(ctx).Err(); err != nil {
		t.Fatalf("the ACL user's PING: %v", err)
	}
	for _, cmd := range [][]any{{"FLUSHALL"}, {"CONFIG", "SET", "maxclients", "1"}, {"KEYS", "*"}, {"SET", "other", "1"},
		{"GET", "session:1"}, {"PUBLISH", "other-channel", "x"}, {"SHUTDOWN"}} {
		if err := user.Do(ctx, cmd...).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("the ACL user's %v: %v, want NOPERM", cmd, err)
		}
	}
	anonymous := redis.NewClient(&redis.Options{Addr: st.redis[0].Addr, MaxRetries: -1})
	defer anonymous.Close()
	if err := anonymous.Ping(ctx).Err(); err == nil {
		t.Error("the default user answered PING: it must be off")
	}
	t.Logf("HOSTILE|a client with the API's Redis credentials (the ACL user couponsvc) runs FLUSHALL, CONFIG SET, KEYS, SHUTDOWN, and reads, writes or publishes outside lock:* and couponsvc:*; a client without credentials PINGs|every command refused NOPERM, the default user is off; 2 instances issued 200 of 200 with that user")
}
