package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"couponsvc/internal/testenv"
	"couponsvc/lock"

	"github.com/google/uuid"
)

// TestContract walks every endpoint, status code and error body of the API (docs/API.md) against a
// real instance on real PostgreSQL and Redis.
func TestContract(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	user := uuid.New()
	// Demo mode says once, at start, that identities are not verified.
	if n := strings.Count(in.logs.String(), "identities are NOT verified"); n != 1 {
		t.Errorf("demo mode logged the unverified-identity warning %d times, want 1:\n%s", n, in.logs.String())
	}

	// A coupon is issued once per user.
	a := in.issue(t, "A0001", user)
	if a.status != http.StatusCreated {
		t.Fatalf("issue: %d %s", a.status, a.body)
	}
	var e struct {
		ID, CouponCode, UserID string
		DiscountAmount         int64
		IssuedAt               time.Time
	}
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(e.ID); err != nil || e.CouponCode != "A0001" || e.UserID != user.String() ||
		e.DiscountAmount != 10000 || time.Since(e.IssuedAt) > time.Minute {
		t.Fatalf("wallet entry: %s", a.body)
	}
	if !strings.Contains(string(a.body), `"issuedAt":"`) {
		t.Fatalf("issuedAt missing: %s", a.body)
	}
	for i := 0; i < 3; i++ {
		if a := in.issue(t, "A0001", user); a.status != http.StatusConflict || a.errorCode() != "ALREADY_ISSUED" {
			t.Fatalf("retry %d: %d %s", i, a.status, a.body)
		}
	}
	// Demo mode ignores Authorization on the user routes: the body says who asks.
	if a := sendAs(t, "Bearer not.a.token", "POST", in.base+"/api/v1/coupons/A0001/issue", `{"userId":"`+user.String()+`"}`); a.status != http.StatusConflict {
		t.Fatalf("demo mode with an Authorization header: %d %s", a.status, a.body)
	}

	// Reads.
	a = do(t, "GET", in.base+"/api/v1/coupons", "")
	var list []map[string]any
	if err := json.Unmarshal(a.body, &list); err != nil || a.status != 200 || len(list) != 3 {
		t.Fatalf("list: %d %s", a.status, a.body)
	}
	if list[0]["code"] != "A0001" || list[0]["issuedQuantity"] != 1.0 || list[0]["remaining"] != 299.0 ||
		list[0]["totalQuantity"] != 300.0 || list[0]["name"] != "Coupon A" || list[0]["discountAmount"] != 10000.0 {
		t.Fatalf("list[0]: %v", list[0])
	}
	a = do(t, "GET", in.base+"/api/v1/coupons/C0001", "")
	if a.status != 200 || !strings.Contains(string(a.body), `"totalQuantity":10000`) || !strings.Contains(string(a.body), `"remaining":10000`) {
		t.Fatalf("get C0001: %d %s", a.status, a.body)
	}
	a = do(t, "GET", in.base+"/api/v1/users/"+user.String()+"/coupons", "")
	if a.status != 200 || !strings.Contains(string(a.body), e.ID) {
		t.Fatalf("wallet: %d %s", a.status, a.body)
	}
	a = do(t, "GET", in.base+"/api/v1/users/"+uuid.NewString()+"/coupons", "")
	if a.status != 200 || strings.TrimSpace(string(a.body)) != "[]" {
		t.Fatalf("empty wallet: %d %s", a.status, a.body)
	}

	// Every bad input: the API's status and code, and nothing left behind.
	long := `{"userId":"` + user.String() + `","pad":"` + strings.Repeat("x", 5000) + `"}`
	fresh := uuid.NewString()
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown coupon", "POST", "/api/v1/coupons/Z9999/issue", `{"userId":"` + fresh + `"}`, 404, "COUPON_NOT_FOUND"},
		{"code with SQL", "POST", "/api/v1/coupons/A0001'%20OR%20'1'='1/issue", `{"userId":"` + fresh + `"}`, 404, "COUPON_NOT_FOUND"},
		{"code with dots", "POST", "/api/v1/coupons/..%2FA0001/issue", `{"userId":"` + fresh + `"}`, 404, "COUPON_NOT_FOUND"},
		{"malformed JSON", "POST", "/api/v1/coupons/A0001/issue", `{"userId":`, 400, "INVALID_REQUEST"},
		{"unknown field", "POST", "/api/v1/coupons/A0001/issue", `{"userId":"` + fresh + `","admin":true}`, 400, "INVALID_REQUEST"},
		{"missing userId", "POST", "/api/v1/coupons/A0001/issue", `{}`, 400, "INVALID_REQUEST"},
		{"empty body", "POST", "/api/v1/coupons/A0001/issue", ``, 400, "INVALID_REQUEST"},
		{"array body", "POST", "/api/v1/coupons/A0001/issue", `["` + fresh + `"]`, 400, "INVALID_REQUEST"},
		{"null body", "POST", "/api/v1/coupons/A0001/issue", `null`, 400, "INVALID_REQUEST"},
		{"trailing data", "POST", "/api/v1/coupons/A0001/issue", `{"userId":"` + fresh + `"} {}`, 400, "INVALID_REQUEST"},
		{"userId not a string", "POST", "/api/v1/coupons/A0001/issue", `{"userId":42}`, 400, "INVALID_REQUEST"},
		{"non-UUID userId", "POST", "/api/v1/coupons/A0001/issue", `{"userId":"alice"}`, 400, "INVALID_REQUEST"},
		{"nil UUID", "POST", "/api/v1/coupons/A0001/issue", `{"userId":"00000000-0000-0000-0000-000000000000"}`, 400, "INVALID_REQUEST"},
		{"UUID without hyphens", "POST", "/api/v1/coupons/A0001/issue", `{"userId":"` + strings.ReplaceAll(fresh, "-", "") + `"}`, 400, "INVALID_REQUEST"},
		{"body over 4 KiB", "POST", "/api/v1/coupons/A0001/issue", long, 400, "INVALID_REQUEST"},
		{"unknown coupon read", "GET", "/api/v1/coupons/Z9999", "", 404, "COUPON_NOT_FOUND"},
		{"wallet of non-UUID", "GET", "/api/v1/users/alice/coupons", "", 400, "INVALID_REQUEST"},
		{"wallet of me in demo mode", "GET", "/api/v1/users/me/coupons", "", 400, "INVALID_REQUEST"},
		{"unknown route", "GET", "/api/v2/coupons", "", 404, "NOT_FOUND"},
		{"wrong method", "DELETE", "/api/v1/coupons", "", 405, "METHOD_NOT_ALLOWED"},
	} {
		a := do(t, tc.method, in.base+tc.path, tc.body)
		if a.status != tc.status || a.errorCode() != tc.code {
			t.Errorf("%s: got %d %s, want %d %s", tc.name, a.status, a.body, tc.status, tc.code)
		}
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(a.body, &body); err != nil || body.Error.Message == "" {
			t.Errorf("%s: error body %q lacks a message", tc.name, a.body)
		}
	}
	checkInvariants(t, st.dsn, "A0001", 1, nil)

	// Operations endpoints.
	for path, want := range map[string]string{
		"/healthz":            `"ok"`,
		"/readyz":             `"ready"`,
		"/swagger/index.html": "swagger-ui",
		"/swagger/doc.json":   `/api/v1/coupons/{code}/issue`,
		"/metrics":            `couponsvc_issue_total{coupon="A0001",result="already_issued"} 4`,
	} {
		if a := do(t, "GET", in.base+path, ""); a.status != 200 || !strings.Contains(string(a.body), want) {
			t.Errorf("%s: %d, body lacks %s:\n%.400s", path, a.status, want, a.body)
		}
	}
	// The grant is released (and its hold observed) once the coupon's owner has lingered
	// ownerLinger (500 ms) without requests.
	var m string
	testenv.WaitFor(t, 5*time.Second, "the lock's hold observed once the owner let go", func() bool {
		m = string(do(t, "GET", in.base+"/metrics", "").body)
		return strings.Contains(m, "couponsvc_lock_hold_seconds_count 1")
	})
	for _, name := range []string{
		`couponsvc_http_requests_total{method="POST",route="/api/v1/coupons/:code/issue",status="201"} 1`,
		`couponsvc_issue_total{coupon="_unknown",result="not_found"}`,
		"couponsvc_lock_wait_seconds_bucket", "couponsvc_lock_hold_seconds_count 1", "couponsvc_issue_tx_seconds_count 1",
	} {
		if !strings.Contains(m, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestSoldOut(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	createCoupon(t, st.dsn, "ONE", 1)
	first, second := uuid.New(), uuid.New()
	if a := in.issue(t, "ONE", first); a.status != 201 {
		t.Fatalf("first: %d %s", a.status, a.body)
	}
	for i := 0; i < 2; i++ { // the second answer comes from the cache, and must agree
		if a := in.issue(t, "ONE", second); a.status != 410 || a.errorCode() != "SOLD_OUT" {
			t.Fatalf("second: %d %s", a.status, a.body)
		}
	}
	if a := in.issue(t, "ONE", first); a.status != 409 {
		t.Fatalf("holder after sell-out: %d %s", a.status, a.body)
	}
	if a := do(t, "GET", in.base+"/api/v1/coupons/ONE", ""); !strings.Contains(string(a.body), `"remaining":0`) {
		t.Fatalf("coupon: %s", a.body)
	}
}

// holdLock takes coupon code's lock from outside the service, as another instance would.
func holdLock(t *testing.T, addrs []string, code string) (release func()) {
	t.Helper()
	c := lock.New(lock.NewNodes(addrs, "", ""))
	ctx := lock.WithOwner(context.Background(), lock.NewOwner())
	m := c.Mutex("coupon:" + code)
	if err := m.TryLock(ctx, time.Second, 0); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := m.Unlock(ctx); err != nil {
			t.Error(err)
		}
		c.Close()
	}
}

func TestLockTimeoutAndInFlightLimit(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(map[string]string{"LOCK_WAIT": "400ms", "MAX_INFLIGHT": "1"}))
	release := holdLock(t, testenv.Addrs(st.redis), "B0001")

	done := make(chan answer, 1)
	go func() { done <- in.issue(t, "B0001", uuid.New()) }()
	time.Sleep(100 * time.Millisecond) // the first request now waits for the lock, holding the only slot
	a := in.issue(t, "B0001", uuid.New())
	if a.status != 429 || a.errorCode() != "TOO_MANY_REQUESTS" || a.header.Get("Retry-After") == "" {
		t.Errorf("over the in-flight limit: %d %v %s", a.status, a.header, a.body)
	}
	start := time.Now()
	a = testenv.Receive(t, done, 10*time.Second, "the request waiting for the held lock is answered")
	if a.status != 503 || a.errorCode() != "LOCK_TIMEOUT" || a.header.Get("Retry-After") == "" {
		t.Errorf("lock held elsewhere: %d %v %s", a.status, a.header, a.body)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("LOCK_TIMEOUT after %v, want about LOCK_WAIT", waited)
	}
	release()
	if a := in.issue(t, "B0001", uuid.New()); a.status != 201 {
		t.Errorf("after release: %d %s", a.status, a.body)
	}
	checkInvariants(t, st.dsn, "B0001", 1, nil)
}

func TestUnavailable(t *testing.T) {
	st := newStack(t, 3)
	in := startInstance(t, st.env(map[string]string{"LOCK_WAIT": "3s"}))
	if a := in.issue(t, "A0001", uuid.New()); a.status != 201 {
		t.Fatalf("healthy: %d %s", a.status, a.body)
	}
	// Two of three Redis nodes gone: no quorum, a fast 503 UNAVAILABLE, nothing issued. The
	// instance owns A0001 for a moment after its last request, and a grant still valid when
	// the nodes went may serve one more, as Redlock allows: ask once it has let go (the
	// linger of 500 ms and the watchdog lease ran out).
	st.redis[0].Stop(t)
	st.redis[1].Stop(t)
	time.Sleep(500*time.Millisecond + lock.DefaultWatchdogTimeout)
	start := time.Now()
	a := in.issue(t, "A0001", uuid.New())
	if a.status != 503 || a.errorCode() != "UNAVAILABLE" {
		t.Fatalf("no quorum: %d %s", a.status, a.body)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("no-quorum answer took %v; it must not wait out LOCK_WAIT", took)
	}
	if a := do(t, "GET", in.base+"/readyz", ""); a.status != 503 || a.errorCode() != "UNAVAILABLE" {
		t.Errorf("readyz without quorum: %d %s", a.status, a.body)
	}
	st.redis[0].Start(t)
	st.redis[1].Start(t)
	testenv.WaitFor(t, 10*time.Second, "a fresh user is issued A0001 once the quorum is back", func() bool {
		return in.issue(t, "A0001", uuid.New()).status == 201
	})
	checkInvariants(t, st.dsn, "A0001", 2, nil)
}

func TestPostgresDown(t *testing.T) {
	pg := testenv.NewPostgres(t)
	st := &stack{dsn: pg.CreateDatabase(t), redis: testenv.NewRedisNodes(t, 1)}
	in := startInstance(t, st.env(nil))
	if a := in.issue(t, "A0001", uuid.New()); a.status != 201 {
		t.Fatalf("healthy: %d %s", a.status, a.body)
	}
	pg.Stop(t)
	for _, a := range []answer{
		in.issue(t, "A0001", uuid.New()),
		do(t, "GET", in.base+"/api/v1/coupons", ""),
		do(t, "GET", in.base+"/readyz", ""),
	} {
		if a.status != 503 || a.errorCode() != "UNAVAILABLE" {
			t.Errorf("PostgreSQL down: %d %s", a.status, a.body)
		}
	}
	pg.Start(t)
	testenv.WaitFor(t, 15*time.Second, "a fresh user is issued A0001 once PostgreSQL is back", func() bool {
		return in.issue(t, "A0001", uuid.New()).status == 201
	})
	checkInvariants(t, st.dsn, "A0001", 2, nil)
}

func TestMigrateCommandAndConfig(t *testing.T) {
	dsn := newStack(t, 0).dsn
	env := map[string]string{"DATABASE_URL": dsn, "SEED_DEMO_COUPONS": "false"}
	getenv := func(k string) string { return env[k] }
	var logs syncBuffer
	for i := 0; i < 2; i++ { // idempotent
		if err := run(context.Background(), []string{"migrate"}, getenv, &logs, &logs); err != nil {
			t.Fatalf("migrate: %v\n%s", err, logs.String())
		}
	}
	var n int
	if err := db(t, dsn).QueryRow(context.Background(), `SELECT count(*) FROM coupon`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("SEED_DEMO_COUPONS=false seeded %d coupons (%v)", n, err)
	}
	// A flag overrides its variable.
	if err := run(context.Background(), []string{"migrate", "--seed-demo-coupons=true"}, getenv, &logs, &logs); err != nil {
		t.Fatal(err)
	}
	if err := db(t, dsn).QueryRow(context.Background(), `SELECT count(*) FROM coupon`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("seeded %d coupons (%v)", n, err)
	}
	for _, bad := range []map[string]string{
		{"LOCK_WAIT": "soon"}, {"LOCK_WAIT": "0s"}, {"LOCK_LEASE": "-1s"}, {"MAX_INFLIGHT": "0"},
		{"LOG_LEVEL": "loud"}, {"SEED_DEMO_COUPONS": "maybe"}, {"REDIS_ADDRS": " , "},
		// Identity mode half configured, or with an algorithm that must never be accepted.
		{"AUTH_ISSUER": "https://id.example.com"}, {"AUTH_AUDIENCE": "couponsvc"},
		{"AUTH_JWKS_URL": "https://id.example.com/jwks.json", "AUTH_ISSUER": "https://id.example.com"},
		{"AUTH_JWKS_URL": "ftp://id.example.com/jwks.json", "AUTH_ISSUER": "https://id.example.com", "AUTH_AUDIENCE": "couponsvc"},
		{"AUTH_ALGORITHMS": "RS256,HS256"}, {"AUTH_ALGORITHMS": "none"}, {"AUTH_ALGORITHMS": " , "},
		{"AUTH_CLOCK_SKEW": "1h"}, {"AUTH_CLOCK_SKEW": "-1s"}, {"AUTH_REDEEM_SCOPE": "a b"},
	} {
		err := run(context.Background(), nil, func(k string) string { return bad[k] }, &logs, &logs)
		if err == nil || !strings.Contains(err.Error(), "configuration") {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if err := run(context.Background(), []string{"frobnicate"}, getenv, &logs, &logs); err == nil {
		t.Error("unknown command accepted")
	}
	if !strings.Contains(redactDSN("postgres://app:s3cret@db:5432/coupon"), "app@db:5432/coupon") ||
		strings.Contains(redactDSN("postgres://app:s3cret@db:5432/coupon"), "s3cret") {
		t.Error("DSN not redacted")
	}
}
