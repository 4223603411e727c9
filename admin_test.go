package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/testenv"

	"github.com/google/uuid"
)

const adminToken = "t0ken-for-tests-t0ken-for-tests-32"

// sendAs makes one request with the given Authorization header (none when empty).
func sendAs(t testing.TB, auth, method, url, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// admin calls the admin API with the right token.
func (in *instance) admin(t testing.TB, method, path, body string) answer {
	t.Helper()
	return sendAs(t, "Bearer "+adminToken, method, in.base+"/api/v1/admin"+path, body)
}

func mustStatus(t testing.TB, what string, a answer, status int, code string) {
	t.Helper()
	if a.status != status || (code != "" && a.errorCode() != code) {
		t.Fatalf("%s: %d %s, want %d %s", what, a.status, a.body, status, code)
	}
}

func TestAdminAuth(t *testing.T) {
	st := newStack(t, 1)
	body := `{"code":"AUTH1","name":"auth","discountAmount":1,"totalQuantity":1}`
	without := startInstance(t, st.env(nil))
	for _, path := range []string{"/api/v1/admin/coupons", "/api/v1/admin/schedules"} {
		mustStatus(t, "no ADMIN_TOKEN: "+path, sendAs(t, "Bearer ", "POST", without.base+path, body), 404, "NOT_FOUND")
	}

	in := startInstance(t, st.env(map[string]string{"ADMIN_TOKEN": adminToken}))
	// Every refusal is logged and answered only after a second (concurrently here, so the
	// test does not wait 32 seconds).
	var wg sync.WaitGroup
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer " + adminToken + "x",
		"bearer " + adminToken, "Basic " + adminToken, adminToken} {
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/coupons", body}, {"PATCH", "/coupons/A0001", `{"paused":true}`},
			{"POST", "/schedules", `{}`}, {"GET", "/schedules", ""},
		} {
			wg.Go(func() {
				start := time.Now()
				a := sendAs(t, auth, r.method, in.base+"/api/v1/admin"+r.path, r.body)
				took := time.Since(start)
				mustStatus(t, fmt.Sprintf("%s %s with %q", r.method, r.path, auth), a, 401, "UNAUTHORIZED")
				if a.header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				if took < 900*time.Millisecond {
					t.Errorf("%s %s with %q refused after %v: a wrong token must cost the guesser a second", r.method, r.path, auth, took)
				}
			})
		}
	}
	wg.Wait() // bounded: the client's timeout
	if n := strings.Count(in.logs.String(), "admin route refused"); n != 32 {
		t.Errorf("%d refused admin requests logged, want 32", n)
	}
	// A token shorter than 32 characters is refused at start.
	if _, err := loadConfig("serve", nil, func(k string) string { return map[string]string{"ADMIN_TOKEN": "s3cret"}[k] }, io.Discard); err == nil {
		t.Error("ADMIN_TOKEN=s3cret accepted")
	}
	if a := in.issue(t, "A0001", uuid.New()); a.status != 201 {
		t.Fatalf("A0001 paused by an unauthorised PATCH? %d %s", a.status, a.body)
	}
	mustStatus(t, "right token", in.admin(t, "POST", "/coupons", body), 201, "")
}

// A coupon's life through the admin API on one instance, checked from another.
func TestAdminCouponLifecycle(t *testing.T) {
	st := newStack(t, 1)
	env := st.env(map[string]string{"ADMIN_TOKEN": adminToken})
	in, other := startInstance(t, env), startInstance(t, st.env(map[string]string{"ADMIN_TOKEN": adminToken}))
	opens := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for _, tc := range []struct{ name, body, code string }{
		{"bad code", `{"code":"a/b","name":"x","discountAmount":1,"totalQuantity":1}`, "INVALID_REQUEST"},
		{"no name", `{"code":"X1","discountAmount":1,"totalQuantity":1}`, "INVALID_REQUEST"},
		{"no quantity", `{"code":"X1","name":"x","discountAmount":1}`, "INVALID_REQUEST"},
		{"negative quantity", `{"code":"X1","name":"x","discountAmount":1,"totalQuantity":-1}`, "INVALID_REQUEST"},
		{"closes before opens", `{"code":"X1","name":"x","discountAmount":1,"totalQuantity":1,"opensAt":"2026-11-22T10:00:00Z","closesAt":"2026-11-22T09:00:00Z"}`, "INVALID_REQUEST"},
		{"bad time", `{"code":"X1","name":"x","discountAmount":1,"totalQuantity":1,"opensAt":"tomorrow"}`, "INVALID_REQUEST"},
		{"zero validity", `{"code":"X1","name":"x","discountAmount":1,"totalQuantity":1,"validDays":0}`, "INVALID_REQUEST"},
		{"unknown field", `{"code":"X1","name":"x","discountAmount":1,"totalQuantity":1,"issuedQuantity":5}`, "INVALID_REQUEST"},
		{"existing code", `{"code":"A0001","name":"x","discountAmount":1,"totalQuantity":1}`, "COUPON_EXISTS"},
	} {
		a := in.admin(t, "POST", "/coupons", tc.body)
		if a.errorCode() != tc.code || (a.status != 400 && a.status != 409) {
			t.Errorf("%s: %d %s, want %s", tc.name, a.status, a.body, tc.code)
		}
	}

	a := in.admin(t, "POST", "/coupons", fmt.Sprintf(
		`{"code":"LUNCH-1","name":"Lunch","discountAmount":3000,"totalQuantity":3,"opensAt":%q,"validDays":10,"minOrderAmount":10000}`,
		opens.Format(time.RFC3339)))
	mustStatus(t, "create", a, 201, "")
	var cp map[string]any
	if err := json.Unmarshal(a.body, &cp); err != nil {
		t.Fatal(err)
	}
	if cp["code"] != "LUNCH-1" || cp["opensAt"] != opens.Format(time.RFC3339) || cp["closesAt"] != nil ||
		cp["validDays"] != 10.0 || cp["minOrderAmount"] != 10000.0 || cp["paused"] != false || cp["remaining"] != 3.0 {
		t.Fatalf("created: %s", a.body)
	}
	u := uuid.New()
	mustStatus(t, "before opensAt", other.issue(t, "LUNCH-1", u), 403, "EVENT_NOT_OPEN")

	patch := func(body string) answer { return in.admin(t, "PATCH", "/coupons/LUNCH-1", body) }
	mustStatus(t, "open now", patch(fmt.Sprintf(`{"opensAt":%q}`, time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano))), 200, "")
	// The other instance cached the old window; the notice reaches it within moments.
	testenv.WaitFor(t, 2*time.Second, "the other instance sees LUNCH-1 open", func() bool {
		return other.issue(t, "LUNCH-1", u).status != 403
	})
	w := do(t, "GET", other.base+"/api/v1/users/"+u.String()+"/coupons", "")
	var entries []struct {
		CouponCode          string
		IssuedAt, ExpiresAt time.Time
		RedeemedAt, OrderID *string
	}
	if err := json.Unmarshal(w.body, &entries); err != nil || len(entries) != 1 || entries[0].CouponCode != "LUNCH-1" ||
		!entries[0].ExpiresAt.Equal(entries[0].IssuedAt.Add(10*24*time.Hour)) || entries[0].RedeemedAt != nil ||
		entries[0].OrderID != nil || !strings.Contains(string(w.body), `"redeemedAt":null`) {
		t.Fatalf("wallet: %s", w.body)
	}

	mustStatus(t, "pause", patch(`{"paused":true}`), 200, "")
	mustStatus(t, "paused, same instance", in.issue(t, "LUNCH-1", uuid.New()), 403, "EVENT_CLOSED")
	// u holds one, so asking again until the notice arrives consumes no stock.
	testenv.WaitFor(t, 2*time.Second, "the other instance sees LUNCH-1 paused", func() bool {
		return other.issue(t, "LUNCH-1", u).errorCode() == "EVENT_CLOSED"
	})
	mustStatus(t, "resume", patch(`{"paused":false}`), 200, "")
	mustStatus(t, "resumed", in.issue(t, "LUNCH-1", uuid.New()), 201, "")
	mustStatus(t, "below issued", patch(`{"totalQuantity":1}`), 409, "STOCK_BELOW_ISSUED")
	mustStatus(t, "close now", patch(fmt.Sprintf(`{"closesAt":%q}`, time.Now().UTC().Format(time.RFC3339Nano))), 200, "")
	mustStatus(t, "closed", in.issue(t, "LUNCH-1", uuid.New()), 403, "EVENT_CLOSED")
	a = patch(`{"closesAt":null,"totalQuantity":2}`)
	mustStatus(t, "reopen, stock down to issued", a, 200, "")
	if !strings.Contains(string(a.body), `"closesAt":null`) || !strings.Contains(string(a.body), `"remaining":0`) {
		t.Fatalf("reopened: %s", a.body)
	}
	mustStatus(t, "sold out", in.issue(t, "LUNCH-1", uuid.New()), 410, "SOLD_OUT")
	for _, tc := range []struct{ what, body string }{
		{"empty patch", `{}`}, {"negative stock", `{"totalQuantity":-1}`},
		{"window inverted", fmt.Sprintf(`{"opensAt":"2030-01-01T00:00:00Z","closesAt":%q}`, time.Now().UTC().Format(time.RFC3339))},
		{"unknown field", `{"name":"renamed"}`},
	} {
		mustStatus(t, tc.what, patch(tc.body), 400, "INVALID_REQUEST")
	}
	mustStatus(t, "unknown coupon", in.admin(t, "PATCH", "/coupons/NOPE", `{"paused":true}`), 404, "COUPON_NOT_FOUND")
	checkInvariants(t, st.dsn, "LUNCH-1", 2, nil)
}

// A daily drop created a few minutes before today's opening exists at once, on the local date
// of its opening, with the window until the next day's.
func TestDailyScheduleEndToEnd(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(map[string]string{"ADMIN_TOKEN": adminToken}))
	seoul, _ := time.LoadLocation("Asia/Seoul")
	opens := time.Now().In(seoul).Add(10 * time.Minute).Truncate(time.Minute)
	body := fmt.Sprintf(`{"codePrefix":"DROP","name":"Daily drop","openTime":%q,"timeZone":"Asia/Seoul",
		"quantityPerDay":100,"discountAmount":3000,"validDays":30,"minOrderAmount":10000}`, opens.Format("15:04"))
	a := in.admin(t, "POST", "/schedules", body)
	mustStatus(t, "create schedule", a, 201, "")
	if !strings.Contains(string(a.body), `"openTime":"`+opens.Format("15:04")+`"`) {
		t.Fatalf("schedule: %s", a.body)
	}
	mustStatus(t, "same prefix", in.admin(t, "POST", "/schedules", body), 409, "COUPON_EXISTS")
	for _, bad := range []string{
		strings.Replace(body, "Asia/Seoul", "Mars/Olympus", 1), strings.Replace(body, "Asia/Seoul", "Local", 1),
		strings.Replace(body, `"DROP"`, `"BAD PREFIX"`, 1), strings.Replace(body, opens.Format("15:04"), "25:00", 1),
	} {
		mustStatus(t, "invalid schedule", in.admin(t, "POST", "/schedules", bad), 400, "INVALID_REQUEST")
	}
	code := "DROP-" + opens.Format("20060102")
	a = do(t, "GET", in.base+"/api/v1/coupons/"+code, "")
	mustStatus(t, "today's coupon", a, 200, "")
	var cp struct {
		OpensAt, ClosesAt time.Time
		TotalQuantity     int
	}
	if err := json.Unmarshal(a.body, &cp); err != nil || !cp.OpensAt.Equal(opens) ||
		!cp.ClosesAt.Equal(opens.AddDate(0, 0, 1)) || cp.TotalQuantity != 100 {
		t.Fatalf("%s: %s, want open %v", code, a.body, opens)
	}
	mustStatus(t, "before the drop", in.issue(t, code, uuid.New()), 403, "EVENT_NOT_OPEN")
	a = in.admin(t, "GET", "/schedules", "")
	if a.status != 200 || !strings.Contains(string(a.body), `"codePrefix":"DROP"`) {
		t.Fatalf("list schedules: %d %s", a.status, a.body)
	}
	m := string(do(t, "GET", in.base+"/metrics", "").body)
	for _, want := range []string{
		"couponsvc_schedule_coupons_created_total 1",
		`couponsvc_issue_total{coupon="` + code + `",result="event_not_open"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, m)
		}
	}
}

// issued gives user one coupon of code (created open, with the given minimum) and returns the
// wallet id.
func issued(t *testing.T, in *instance, code string, user uuid.UUID) string {
	t.Helper()
	a := in.issue(t, code, user)
	mustStatus(t, "issue", a, 201, "")
	return walletID(t, a).String()
}

func (in *instance) redeem(t testing.TB, walletID string, user uuid.UUID, order string, amount int64) answer {
	return do(t, "POST", in.base+"/api/v1/wallet/"+walletID+"/redeem",
		fmt.Sprintf(`{"userId":%q,"orderId":%q,"orderAmount":%d}`, user, order, amount))
}

func TestRedemption(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(map[string]string{"ADMIN_TOKEN": adminToken}))
	mustStatus(t, "create", in.admin(t, "POST", "/coupons",
		`{"code":"TRADE","name":"3,000 off 10,000","discountAmount":3000,"totalQuantity":10,"minOrderAmount":10000}`), 201, "")
	owner, stranger := uuid.New(), uuid.New()
	wid := issued(t, in, "TRADE", owner)

	mustStatus(t, "not the owner", in.redeem(t, wid, stranger, "o-1", 20000), 403, "NOT_OWNER")
	mustStatus(t, "below minimum", in.redeem(t, wid, owner, "o-1", 9999), 422, "ORDER_BELOW_MINIMUM")
	mustStatus(t, "unknown entry", in.redeem(t, uuid.NewString(), owner, "o-1", 20000), 404, "WALLET_NOT_FOUND")
	for _, bad := range []string{`{"userId":"` + owner.String() + `","orderId":"o-1"}`, `{"userId":"x","orderId":"o-1","orderAmount":1}`,
		`{"userId":"` + owner.String() + `","orderId":"","orderAmount":1}`, `{"userId":"` + owner.String() + `","orderId":"o-1","orderAmount":-1}`} {
		mustStatus(t, "bad body "+bad, do(t, "POST", in.base+"/api/v1/wallet/"+wid+"/redeem", bad), 400, "INVALID_REQUEST")
	}
	mustStatus(t, "bad wallet id", in.redeem(t, "nope", owner, "o-1", 1), 400, "INVALID_REQUEST")

	first := in.redeem(t, wid, owner, "o-1", 25000)
	mustStatus(t, "redeem", first, 200, "")
	var r struct {
		WalletID, OrderID                                      string
		OrderAmount, DiscountAmount, BuyerPays, SellerReceives int64
		RedeemedAt                                             time.Time
	}
	if err := json.Unmarshal(first.body, &r); err != nil || r.WalletID != wid || r.OrderID != "o-1" || r.OrderAmount != 25000 ||
		r.DiscountAmount != 3000 || r.BuyerPays != 22000 || r.SellerReceives != 25000 || time.Since(r.RedeemedAt) > time.Minute {
		t.Fatalf("redemption: %s", first.body)
	}
	for range 3 { // idempotent per order
		if a := in.redeem(t, wid, owner, "o-1", 25000); a.status != 200 || string(a.body) != string(first.body) {
			t.Fatalf("retry: %d %s, first %s", a.status, a.body, first.body)
		}
	}
	mustStatus(t, "another order", in.redeem(t, wid, owner, "o-2", 25000), 409, "ALREADY_REDEEMED")
	mustStatus(t, "stranger after redemption", in.redeem(t, wid, stranger, "o-1", 25000), 403, "NOT_OWNER")

	// A discount above the order: the buyer pays 0, the seller still gets the whole order.
	mustStatus(t, "create big", in.admin(t, "POST", "/coupons", `{"code":"BIG","name":"big","discountAmount":50000,"totalQuantity":10}`), 201, "")
	a := in.redeem(t, issued(t, in, "BIG", owner), owner, "o-3", 20000)
	if a.status != 200 || !strings.Contains(string(a.body), `"buyerPays":0,"sellerReceives":20000`) {
		t.Fatalf("discount above order: %d %s", a.status, a.body)
	}

	// Time passes for a third entry (its expiry moved into the past in PostgreSQL).
	expiredID := issued(t, in, "C0001", owner)
	if _, err := db(t, st.dsn).Exec(context.Background(),
		`UPDATE coupon_wallet SET expires_at = now() - interval '1 second' WHERE id = $1`, expiredID); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, "expired", in.redeem(t, expiredID, owner, "o-4", 20000), 410, "EXPIRED")

	list := func(status string) string {
		a := do(t, "GET", in.base+"/api/v1/users/"+owner.String()+"/coupons?status="+status, "")
		mustStatus(t, "wallet "+status, a, 200, "")
		return string(a.body)
	}
	if got := list("redeemed"); strings.Count(got, `"id"`) != 2 || !strings.Contains(got, `"orderId":"o-1"`) {
		t.Errorf("redeemed: %s", got)
	}
	if got := list("expired"); strings.Count(got, `"id"`) != 1 || !strings.Contains(got, expiredID) {
		t.Errorf("expired: %s", got)
	}
	if got := list("usable"); got != "[]" {
		t.Errorf("usable: %s", got)
	}
	if got := list(""); strings.Count(got, `"id"`) != 3 {
		t.Errorf("all: %s", got)
	}
	mustStatus(t, "bad status", do(t, "GET", in.base+"/api/v1/users/"+owner.String()+"/coupons?status=old", ""), 400, "INVALID_REQUEST")
	m := string(do(t, "GET", in.base+"/metrics", "").body)
	for _, want := range []string{ // every 200 counts, the idempotent retries too
		`couponsvc_redeem_total{result="redeemed"} 5`, `couponsvc_redeem_total{result="already_redeemed"} 1`,
		`couponsvc_redeem_total{result="expired"} 1`, `couponsvc_redeem_total{result="not_owner"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// 100 redemptions of one entry for 100 different orders at once: exactly one wins; and 20
// retries of one order at once all get its one redemption.
func TestConcurrentRedemptions(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(nil))
	owner := uuid.New()
	wid := issued(t, in, "B0001", owner)
	answers, _ := crowd(t, 100, 100, func(i int) answer { return in.redeem(t, wid, owner, fmt.Sprintf("order-%d", i), 10000) })
	counts := statusCounts(answers)
	if counts[200] != 1 || counts[409] != 99 {
		t.Fatalf("statuses %v, want one 200 and 99 409", counts)
	}
	var winner string
	for i, a := range answers {
		if a.status == 200 {
			winner = fmt.Sprintf("order-%d", i)
		}
	}
	var stored string
	if err := db(t, st.dsn).QueryRow(context.Background(), `SELECT order_id FROM coupon_wallet WHERE id = $1`, wid).Scan(&stored); err != nil || stored != winner {
		t.Fatalf("stored order %q (%v), the 200 went to %s", stored, err, winner)
	}

	holder := uuid.New()
	wid = issued(t, in, "B0001", holder)
	answers, _ = crowd(t, 20, 20, func(int) answer { return in.redeem(t, wid, holder, "same", 10000) })
	for _, a := range answers {
		if a.status != 200 || string(a.body) != string(answers[0].body) {
			t.Fatalf("retries of one order at once: %d %s, another got %s", a.status, a.body, answers[0].body)
		}
	}
}

// The stock of a live coupon is raised in the middle of a crowd on two instances: the final
// count equals the new stock, never more.
func TestRaiseStockDuringCrowd(t *testing.T) {
	st := newStack(t, 3)
	env := map[string]string{"ADMIN_TOKEN": adminToken}
	ins := []*instance{startInstance(t, st.env(env)), startInstance(t, st.env(env))}
	mustStatus(t, "create", ins[0].admin(t, "POST", "/coupons", `{"code":"RAISE","name":"raise","discountAmount":1,"totalQuantity":50}`), 201, "")

	// The watcher raises the stock to 120 once the first 50 are issued, then reports the
	// raise's answer; stopped before that, it reports why and the last count it read.
	type watched struct {
		issued int
		raise  answer
		err    error
	}
	conn := db(t, st.dsn)
	watching, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	report := make(chan watched, 1)
	go func() {
		var w watched
		for {
			if w.err = conn.QueryRow(watching, `SELECT issued_quantity FROM coupon WHERE code = 'RAISE'`).Scan(&w.issued); w.err != nil {
				break
			}
			if w.issued >= 50 {
				w.raise = ins[1].admin(t, "PATCH", "/coupons/RAISE", `{"totalQuantity":120}`)
				break
			}
			time.Sleep(time.Millisecond)
		}
		report <- w
	}()
	users := distinctUsers(1500)
	answers, _ := crowd(t, 1000, 200, func(i int) answer { return ins[i%2].issue(t, "RAISE", users[i]) })
	// 1,000 distinct users for a stock of 50: once the first wave has ended, 50 were issued
	// and the watcher raises the stock, waiting for the lock at most LOCK_WAIT (3 s).
	time.AfterFunc(10*time.Second, stopWatching)
	w := testenv.Receive(t, report, 10*time.Second+client.Timeout+5*time.Second, "the watcher reports")
	switch {
	case w.err != nil && watching.Err() != nil:
		t.Fatalf("the stock was never raised: 10s after the first wave (1,000 distinct users for a stock of 50) ended, "+
			"issued_quantity was %d, not 50; first wave %v", w.issued, outcomes(answers))
	case w.err != nil:
		t.Fatalf("the watcher's query failed: %v; first wave %v", w.err, outcomes(answers))
	}
	mustStatus(t, "raise during the crowd", w.raise, 200, "")
	// Demand after the raise, should the first wave have ended before it.
	more, _ := crowd(t, 500, 100, func(i int) answer { return ins[i%2].issue(t, "RAISE", users[1000+i]) })
	all := append(answers, more...)
	counts := statusCounts(all)
	if counts[201] != 120 || counts[201]+counts[410] != len(all) {
		t.Fatalf("statuses %v, want 120x201 and the rest 410 (first wave %v, second wave %v)",
			counts, outcomes(answers), outcomes(more))
	}
	checkInvariants(t, st.dsn, "RAISE", 120, granted(t, users, all))
	t.Logf("first wave %v, second wave %v", statusCounts(answers), statusCounts(more))
}
