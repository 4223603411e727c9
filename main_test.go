package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"couponsvc/internal/testenv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// instance is one couponsvc serve, started through run() with its real wiring.
type instance struct {
	base   string
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// stack is the backing servers one or more instances share.
type stack struct {
	dsn   string
	redis []*testenv.Redis
}

func newStack(t *testing.T, redisNodes int) *stack {
	t.Helper()
	return &stack{dsn: testenv.Database(t), redis: testenv.NewRedisNodes(t, redisNodes)}
}

func (s *stack) env(extra map[string]string) map[string]string {
	env := map[string]string{
		"DATABASE_URL": s.dsn,
		"REDIS_ADDRS":  strings.Join(testenv.Addrs(s.redis), ","),
		"LOG_LEVEL":    "warn",
		// As k8s/ deploys it: the instances authenticate what they say to each other.
		"CLUSTER_KEY": "test-cluster-key-of-at-least-32-bytes",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func startInstance(t *testing.T, env map[string]string) *instance {
	t.Helper()
	return startInstanceWith(t, env, nil)
}

// startInstanceWith is startInstance with traces on, every span going to spans.
func startInstanceWith(t *testing.T, env map[string]string, spans sdktrace.SpanProcessor) *instance {
	t.Helper()
	port := testenv.FreePort(t)
	env["HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{base: "http://" + env["HTTP_ADDR"], cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{}}
	go func() {
		in.done <- runWith(ctx, []string{"serve"}, func(k string) string { return env[k] }, io.Discard, in.logs, spans)
	}()
	waitUp(t, in.base, in.done, in.logs)
	t.Cleanup(func() { in.stop(t) })
	return in
}

// waitUp waits until the service at base answers /readyz with 200 (migrated, PostgreSQL and a
// Redis quorum reachable), failing the test if it exits first (done) or takes over 30 s.
func waitUp(t *testing.T, base string, done <-chan error, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if a, err := send("GET", base+"/readyz", ""); err == nil && a.status == http.StatusOK {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("service exited at start: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not ready after 30s\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop is SIGTERM: it waits for run to return and checks it returned cleanly.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("run returned %v\n%s", err, in.logs.String())
		} else if t.Failed() {
			t.Logf("%s logged:\n%s", in.base, in.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("instance did not stop within 20s")
	}
}

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: 30 * time.Second},
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errorCode() string {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

// send makes one request; a transport error (connection refused, reset) is returned as is.
func send(method, url, body string) (answer, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}, err
}

// do is send where a transport error fails the test.
func do(t testing.TB, method, url, body string) answer {
	t.Helper()
	a, err := send(method, url, body)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
	}
	return a
}

func (in *instance) issue(t testing.TB, code string, user uuid.UUID) answer {
	return do(t, http.MethodPost, in.base+"/api/v1/coupons/"+code+"/issue", `{"userId":"`+user.String()+`"}`)
}

// db opens a direct connection for checks.
func db(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// createCoupon adds a coupon straight in PostgreSQL (the admin API is a later issue).
func createCoupon(t *testing.T, dsn, code string, stock int) {
	t.Helper()
	_, err := db(t, dsn).Exec(context.Background(),
		`INSERT INTO coupon (id, code, name, discount_amount, total_quantity) VALUES ($1, $2, $2, 100, $3)`,
		uuid.New(), code, stock)
	if err != nil {
		t.Fatal(err)
	}
}

// checkInvariants verifies, in PostgreSQL, the API's invariants for coupon code and that
// the wallet rows are exactly the 201 answers given.
func checkInvariants(t *testing.T, dsn, code string, wantIssued int, granted map[uuid.UUID]uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	conn := db(t, dsn)
	var issued, total, rows, distinctUsers int
	err := conn.QueryRow(ctx, `SELECT c.issued_quantity, c.total_quantity, count(w.id), count(DISTINCT w.user_id)
		FROM coupon c LEFT JOIN coupon_wallet w ON w.coupon_id = c.id WHERE c.code = $1
		GROUP BY c.issued_quantity, c.total_quantity`, code).Scan(&issued, &total, &rows, &distinctUsers)
	if err != nil {
		t.Fatal(err)
	}
	if issued != wantIssued || rows != wantIssued || distinctUsers != rows || issued > total {
		t.Fatalf("%s: issued_quantity %d, rows %d, distinct users %d, total %d; want %d issued",
			code, issued, rows, distinctUsers, total, wantIssued)
	}
	if granted == nil {
		return
	}
	dbRows, err := conn.Query(ctx, `SELECT w.id, w.user_id FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id WHERE c.code = $1`, code)
	if err != nil {
		t.Fatal(err)
	}
	inDB := map[uuid.UUID]uuid.UUID{}
	for dbRows.Next() {
		var id, user uuid.UUID
		if err := dbRows.Scan(&id, &user); err != nil {
			t.Fatal(err)
		}
		inDB[user] = id
	}
	if len(inDB) != len(granted) {
		t.Fatalf("%s: %d rows but %d answers 201", code, len(inDB), len(granted))
	}
	for user, id := range granted {
		if inDB[user] != id {
			t.Fatalf("%s: user %s got 201 with wallet id %s, row has %s", code, user, id, inDB[user])
		}
	}
}

// crowdBudget bounds a crowd: requests not started within it are not sent, and the test
// fails saying how many. As every request ends within client.Timeout, a crowd returns within
// crowdBudget plus that, whatever the service does.
const crowdBudget = 3 * time.Minute

// crowd sends the requests with the given concurrency, all released at once, and returns the
// answers in order plus the latencies. send makes one HTTP request through client. crowd
// may run in a goroutine of the test: it fails the test with Errorf.
func crowd(t *testing.T, n, clients int, send func(i int) answer) ([]answer, []time.Duration) {
	t.Helper()
	answers := make([]answer, n)
	lat := make([]time.Duration, n)
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	start := make(chan struct{})
	deadline := time.Now().Add(crowdBudget)
	var unsent atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range next {
				if time.Now().After(deadline) {
					unsent.Add(1)
					continue
				}
				t0 := time.Now()
				answers[i] = send(i)
				lat[i] = time.Since(t0)
			}
		}()
	}
	close(start)
	wg.Wait() // bounded: see crowdBudget
	if u := unsent.Load(); u > 0 {
		t.Errorf("crowd: %d of %d requests not sent: the crowd did not end within %v (answers so far: %v)",
			u, n, crowdBudget, outcomes(answers))
	}
	return answers, lat
}

// outcomes counts answers by status and, for an error body, its code: "201", "410 SOLD_OUT",
// "503 LOCK_TIMEOUT", ...; "0" is a request that got no answer.
func outcomes(answers []answer) map[string]int {
	m := map[string]int{}
	for _, a := range answers {
		k := strconv.Itoa(a.status)
		if code := a.errorCode(); code != "" {
			k += " " + code
		}
		m[k]++
	}
	return m
}

func statusCounts(answers []answer) map[int]int {
	m := map[int]int{}
	for _, a := range answers {
		m[a.status]++
	}
	return m
}

func walletID(t testing.TB, a answer) uuid.UUID {
	t.Helper()
	var e struct{ ID uuid.UUID }
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("201 body %s: %v", a.body, err)
	}
	return e.ID
}
