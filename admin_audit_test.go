package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"couponsvc/handler"
	"couponsvc/internal/testenv"

	"github.com/google/uuid"
)

// With ADMIN_ADDR set, the admin routes are served on that listener only: on the main port
// they do not exist (404 NOT_FOUND, the contract's body), and the admin listener serves nothing
// else. Both listeners stop on SIGTERM.
func TestAdminListener(t *testing.T) {
	st := newStack(t, 1)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	in := startInstance(t, st.env(map[string]string{"ADMIN_TOKEN": adminToken, "ADMIN_ADDR": adminAddr}))
	adminBase := "http://" + adminAddr
	body := `{"code":"SEP1","name":"separate","discountAmount":1,"totalQuantity":1}`
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/coupons", body}, {"PATCH", "/coupons/A0001", `{"paused":true}`},
		{"POST", "/schedules", `{}`}, {"GET", "/schedules", ""}, {"GET", "/audit", ""},
	} {
		a := in.admin(t, r.method, r.path, r.body)
		mustStatus(t, "main port: "+r.method+" "+r.path, a, 404, "NOT_FOUND")
		if !strings.Contains(string(a.body), `"message":"no such route"`) {
			t.Errorf("main port: %s %s: body %s is not the contract's error body", r.method, r.path, a.body)
		}
	}
	// On the admin listener no forwarding header is believed: the audit's source is the
	// connection's.
	mustStatus(t, "admin port: create", adminWith(t, adminBase, "POST", "/coupons", body, map[string]string{"X-Forwarded-For": "203.0.113.7"}), 201, "")
	var source string
	if err := db(t, st.dsn).QueryRow(context.Background(), `SELECT source FROM admin_audit WHERE target = 'SEP1'`).Scan(&source); err != nil || source != "127.0.0.1" {
		t.Errorf("admin port: audited source %q (%v), want 127.0.0.1 whatever X-Forwarded-For says", source, err)
	}
	mustStatus(t, "admin port: wrong token", sendAs(t, "Bearer wrong", "GET", adminBase+"/api/v1/admin/schedules", ""), 401, "UNAUTHORIZED")
	mustStatus(t, "admin port: audit", sendAs(t, "Bearer "+adminToken, "GET", adminBase+"/api/v1/admin/audit", ""), 200, "")
	// The admin listener is not a second public API.
	for _, path := range []string{"/api/v1/coupons", "/api/v1/coupons/SEP1", "/metrics", "/internal/v1/batch"} {
		mustStatus(t, "admin port: "+path, do(t, "GET", adminBase+path, ""), 404, "NOT_FOUND")
	}
	mustStatus(t, "main port: the coupon made on the admin port", do(t, "GET", in.base+"/api/v1/coupons/SEP1", ""), 200, "")
	// The OpenAPI document says where the admin operations are served.
	doc := string(do(t, "GET", in.base+"/swagger/doc.json", "").body)
	var spec struct {
		Paths map[string]map[string]struct{ Description string }
	}
	if err := json.Unmarshal([]byte(doc), &spec); err != nil {
		t.Fatalf("doc.json: %v", err)
	}
	for path, ops := range spec.Paths {
		if !strings.HasPrefix(path, "/api/v1/admin/") {
			continue
		}
		for method, op := range ops {
			if !strings.Contains(op.Description, "ADMIN_ADDR") {
				t.Errorf("OpenAPI %s %s: the description does not say it is served on ADMIN_ADDR: %q", method, path, op.Description)
			}
		}
	}
	if spec.Paths["/api/v1/admin/audit"] == nil {
		t.Errorf("OpenAPI: no /api/v1/admin/audit")
	}

	in.stop(t) // fails the test unless run returned nil: both listeners drained
	for _, addr := range []string{strings.TrimPrefix(in.base, "http://"), adminAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after shutdown", addr)
		}
	}

	for _, tc := range []struct{ env map[string]string }{
		{map[string]string{"ADMIN_ADDR": ":8081"}},                            // no token
		{map[string]string{"ADMIN_ADDR": "8081", "ADMIN_TOKEN": adminToken}},  // not host:port
		{map[string]string{"ADMIN_ADDR": ":8080", "ADMIN_TOKEN": adminToken}}, // the main listener
		{map[string]string{"MIGRATE_ON_START": "maybe"}},
	} {
		_, err := loadConfig("serve", nil, func(k string) string { return tc.env[k] }, io.Discard)
		if err == nil {
			t.Errorf("%v accepted", tc.env)
		} else if !strings.Contains(err.Error(), "ADMIN_ADDR") && !strings.Contains(err.Error(), "MIGRATE_ON_START") {
			t.Errorf("%v: %v does not name the setting", tc.env, err)
		}
	}
}

// auditRow is an admin_audit row as the API lists it.
type auditRow struct {
	ID, Actor, Source, RequestID, Action, Target string
	At                                           time.Time
	Before, After                                map[string]any
}

// adminWithID calls the admin API with the right token and an X-Request-ID (none when empty).
func adminWithID(t *testing.T, in *instance, method, path, body, requestID string) answer {
	t.Helper()
	return adminWith(t, in.base, method, path, body, map[string]string{"X-Request-ID": requestID})
}

// adminWith calls the admin API at base with the right token and the given headers (those with
// a value).
func adminWith(t *testing.T, base, method, path, body string, headers map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, base+"/api/v1/admin"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

func auditRows(t *testing.T, dsn string) int {
	t.Helper()
	var n int
	if err := db(t, dsn).QueryRow(context.Background(), `SELECT count(*) FROM admin_audit`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Every admin change writes exactly one audit row, in its transaction, with the row before and
// after; a refused change writes none; the token is nowhere in the table.
func TestAdminAudit(t *testing.T) {
	st := newStack(t, 1)
	in := startInstance(t, st.env(map[string]string{"ADMIN_TOKEN": adminToken}))
	actor := handler.AdminActor(adminToken)
	if !strings.HasPrefix(actor, "admin-token:") || len(actor) != len("admin-token:")+8 {
		t.Fatalf("actor %q, want admin-token: and 8 hex digits", actor)
	}
	list := func(query string) []auditRow {
		t.Helper()
		a := in.admin(t, "GET", "/audit"+query, "")
		mustStatus(t, "GET /audit"+query, a, 200, "")
		var rows []auditRow
		if err := json.Unmarshal(a.body, &rows); err != nil {
			t.Fatalf("audit: %v: %s", err, a.body)
		}
		return rows
	}
	// refused asserts that a refused change left the audit trail as it was.
	refused := func(what string, a answer, status int, code string) {
		t.Helper()
		before := auditRows(t, st.dsn)
		mustStatus(t, what, a, status, code)
		if n := auditRows(t, st.dsn); n != before {
			t.Errorf("%s: refused, but the audit went from %d to %d rows", what, before, n)
		}
	}
	if n := auditRows(t, st.dsn); n != 0 {
		t.Fatalf("%d audit rows before any change (the seed is not an admin change)", n)
	}

	a := adminWithID(t, in, "POST", "/coupons", `{"code":"AUD1","name":"audited","discountAmount":100,"totalQuantity":5}`, "req-create-1")
	mustStatus(t, "create", a, 201, "")
	if got := a.header.Get("X-Request-ID"); got != "req-create-1" {
		t.Errorf("X-Request-ID answered %q, want the one sent", got)
	}
	rows := list("")
	if len(rows) != 1 {
		t.Fatalf("after one creation: %d audit rows, want 1: %+v", len(rows), rows)
	}
	r := rows[0]
	if r.Actor != actor || r.Source != "127.0.0.1" || r.RequestID != "req-create-1" || r.Action != "coupon.create" ||
		r.Target != "AUD1" || r.Before != nil || r.After["code"] != "AUD1" || r.After["total_quantity"] != 5.0 {
		t.Errorf("creation audited as %+v", r)
	}

	// Behind a proxy (X-Forwarded-For), the connection's own address is kept next to the client's.
	mustStatus(t, "create via a proxy", adminWith(t, in.base, "POST", "/coupons", `{"code":"AUD0","name":"proxied","discountAmount":1,"totalQuantity":1}`,
		map[string]string{"X-Forwarded-For": "203.0.113.7"}), 201, "")
	if rows := list("?limit=1"); len(rows) != 1 || rows[0].Target != "AUD0" || rows[0].Source != "203.0.113.7 via 127.0.0.1" {
		t.Errorf("through a proxy, audited as %+v; want source 203.0.113.7 via 127.0.0.1", rows)
	}
	refused("duplicate code", in.admin(t, "POST", "/coupons", `{"code":"AUD1","name":"again","discountAmount":1,"totalQuantity":1}`), 409, "COUPON_EXISTS")
	refused("invalid coupon", in.admin(t, "POST", "/coupons", `{"code":"AUD2","name":"x","discountAmount":1,"totalQuantity":-1}`), 400, "INVALID_REQUEST")
	mustStatus(t, "issue one", in.issue(t, "AUD1", uuid.New()), 201, "")
	refused("stock below issued", in.admin(t, "PATCH", "/coupons/AUD1", `{"totalQuantity":0}`), 409, "STOCK_BELOW_ISSUED")
	refused("window inverted", in.admin(t, "PATCH", "/coupons/AUD1", `{"closesAt":"2000-01-01T00:00:00Z"}`), 400, "INVALID_REQUEST")
	refused("empty patch", in.admin(t, "PATCH", "/coupons/AUD1", `{}`), 400, "INVALID_REQUEST")
	refused("unknown coupon", in.admin(t, "PATCH", "/coupons/NOPE", `{"paused":true}`), 404, "COUPON_NOT_FOUND")
	refused("wrong token", sendAs(t, "Bearer wrong", "PATCH", in.base+"/api/v1/admin/coupons/AUD1", `{"paused":true}`), 401, "UNAUTHORIZED")
	refused("invalid schedule", in.admin(t, "POST", "/schedules", `{"codePrefix":"BAD PREFIX","name":"x","openTime":"13:00","timeZone":"UTC","quantityPerDay":1,"discountAmount":1}`), 400, "INVALID_REQUEST")

	// A request id that could forge a log line is replaced by one of the service's.
	a = adminWithID(t, in, "PATCH", "/coupons/AUD1", `{"paused":true,"totalQuantity":7}`, "evil\"id with spaces")
	mustStatus(t, "pause and restock", a, 200, "")
	rid := a.header.Get("X-Request-ID")
	if _, err := uuid.Parse(rid); err != nil {
		t.Errorf("X-Request-ID %q: want a UUID made by the service in place of an unsafe one", rid)
	}
	rows = list("")
	if len(rows) != 3 {
		t.Fatalf("after two creations and a change: %d audit rows, want 3", len(rows))
	}
	r = rows[0] // newest first
	if r.Action != "coupon.update" || r.Target != "AUD1" || r.RequestID != rid || r.Actor != actor ||
		r.Before["paused"] != false || r.Before["total_quantity"] != 5.0 || r.Before["issued_quantity"] != 1.0 ||
		r.After["paused"] != true || r.After["total_quantity"] != 7.0 || r.After["issued_quantity"] != 1.0 {
		t.Errorf("change audited as %+v", r)
	}

	mustStatus(t, "create schedule", in.admin(t, "POST", "/schedules", `{"codePrefix":"AUDS","name":"x","openTime":"13:00","timeZone":"UTC","quantityPerDay":1,"discountAmount":1}`), 201, "")
	rows = list("?limit=1")
	if len(rows) != 1 || rows[0].Action != "schedule.create" || rows[0].Target != "AUDS" || rows[0].Before != nil ||
		rows[0].After["code_prefix"] != "AUDS" || rows[0].After["quantity_per_day"] != 1.0 {
		t.Fatalf("?limit=1 after a schedule's creation: %+v", rows)
	}
	refused("duplicate schedule", in.admin(t, "POST", "/schedules", `{"codePrefix":"AUDS","name":"x","openTime":"13:00","timeZone":"UTC","quantityPerDay":1,"discountAmount":1}`), 409, "COUPON_EXISTS")
	if rows := list("?limit=1000"); len(rows) != 4 || rows[0].Action != "schedule.create" || rows[1].Action != "coupon.update" ||
		rows[2].Target != "AUD0" || rows[3].Target != "AUD1" || rows[0].At.Before(rows[3].At) {
		t.Errorf("?limit=1000: %+v, want the four changes newest first", rows)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=-1", "?limit=ten", "?limit="} {
		mustStatus(t, "GET /audit"+q, in.admin(t, "GET", "/audit"+q, ""), 400, "INVALID_REQUEST")
	}
	mustStatus(t, "GET /audit without the token", sendAs(t, "", "GET", in.base+"/api/v1/admin/audit", ""), 401, "UNAUTHORIZED")

	// The token is nowhere in the audit table, nor in what the API lists of it.
	var leaks int
	if err := db(t, st.dsn).QueryRow(context.Background(),
		`SELECT count(*) FROM admin_audit a WHERE strpos(to_jsonb(a)::text, $1) > 0`, adminToken).Scan(&leaks); err != nil {
		t.Fatal(err)
	}
	if leaks != 0 {
		t.Errorf("the admin token is in %d audit rows", leaks)
	}
	if b := in.admin(t, "GET", "/audit", "").body; strings.Contains(string(b), adminToken) {
		t.Errorf("GET /audit shows the admin token")
	}
}
