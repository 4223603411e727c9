package jmeter

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"couponsvc/internal/idp"
	"couponsvc/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The smoke run: 50 users x 60 iterations = 3,000 issue requests (mix 20/30/50, so tier A's
// 600 requests sell its 300 out) plus 10% retries = 3,300 requests.
var smokeProps = []string{
	"-Jthreads=50", "-Jrampup=2", "-Jloops=60",
	"-JmixA=20", "-JmixB=30", "-JmixC=50", "-JretryPct=10",
}

const smokeRequests = 3300

// TestJMeterSmoke runs the flash-crowd plan with JMeter (Debian's 2.13 through jmeter.sh, or
// 5.x) against the real service built from this repository, on throwaway PostgreSQL and Redis
// servers, and checks the run end to end: the plan loads and runs, every answer is 201/409/410,
// the 201s equal the service's issuedQuantity and the wallet rows in PostgreSQL, tier A is sold
// out at exactly its stock, and the service drains and exits 0 on SIGTERM.
func TestJMeterSmoke(t *testing.T) {
	requireJMeter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	dsn := testenv.Database(t)
	redis := testenv.NewRedisNodes(t, 3)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	svc := startService(ctx, t, buildService(ctx, t, dir), dir, map[string]string{
		"HTTP_ADDR":         addr,
		"DATABASE_URL":      dsn,
		"REDIS_ADDRS":       strings.Join(testenv.Addrs(redis), ","),
		"SEED_DEMO_COUPONS": "true",
		"LOG_LEVEL":         "warn",
	})
	smoke(ctx, t, dir, addr, dsn, nil)
	stopService(t, svc)
}

// TestJMeterSmokeWithTokens is the smoke run against identity mode: the plan's token thread
// group reads one user and bearer token per iteration from a CSV minted by a local identity
// provider whose JWK Set the test serves; every request is verified, the same checks hold, and
// every wallet row belongs to a user of the CSV.
func TestJMeterSmokeWithTokens(t *testing.T) {
	requireJMeter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	key, err := idp.NewKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	var provider http.Handler = http.NotFoundHandler()
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { provider.ServeHTTP(w, r) }))
	defer jwks.Close()
	p, err := idp.New(jwks.URL, key)
	if err != nil {
		t.Fatal(err)
	}
	provider = p
	// One user per iteration, as cmd/tokens writes them.
	users := make([]string, smokeIterations)
	subs := make([]string, smokeIterations)
	for i := range subs {
		subs[i] = uuid.NewString()
		users[i] = subs[i]
	}
	toks, err := p.MintAll(subs, idp.Claims{Audience: []string{"couponsvc"}})
	if err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	for i := range toks {
		fmt.Fprintf(&csv, "%s,%s\n", users[i], toks[i])
	}
	csvPath := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(csvPath, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	dsn := testenv.Database(t)
	redis := testenv.NewRedisNodes(t, 3)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	svc := startService(ctx, t, buildService(ctx, t, dir), dir, map[string]string{
		"HTTP_ADDR":         addr,
		"DATABASE_URL":      dsn,
		"REDIS_ADDRS":       strings.Join(testenv.Addrs(redis), ","),
		"SEED_DEMO_COUPONS": "true",
		"LOG_LEVEL":         "warn",
		"AUTH_JWKS_URL":     jwks.URL + "/jwks.json",
		"AUTH_ISSUER":       jwks.URL,
		"AUTH_AUDIENCE":     "couponsvc",
	})
	// A request without a token is refused: the service checks identities.
	if resp, err := http.Post("http://"+addr+"/api/v1/coupons/A0001/issue", "application/json",
		strings.NewReader(`{"userId":"`+users[0]+`"}`)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("identity mode without a token: %v %v", resp, err)
	}
	smoke(ctx, t, dir, addr, dsn, func(args []string) []string {
		args, err := WithTokens(args, csvPath)
		if err != nil {
			t.Fatal(err)
		}
		return args
	})
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var strangers int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM coupon_wallet WHERE NOT (user_id::text = ANY($1))`, users).Scan(&strangers); err != nil {
		t.Fatal(err)
	}
	if strangers != 0 {
		t.Errorf("%d wallet rows belong to users outside the tokens' CSV", strangers)
	}
	stopService(t, svc)
}

func requireJMeter(t *testing.T) {
	t.Helper()
	if !Installed() {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v", ErrNoJMeter)
		}
		t.Skipf("skipping the JMeter smoke run: %v", ErrNoJMeter)
	}
	if testing.Short() {
		t.Skip("skipping the JMeter smoke run in -short mode")
	}
}

// smokeIterations is threads x loops of smokeProps: one fresh user each.
const smokeIterations = 50 * 60

// smoke runs the plan with smokeProps against the service at addr (edit, when given, changes the
// JMeter arguments) and checks the run end to end: the plan loads and runs, every answer is
// 201/409/410, the 201s equal the service's issuedQuantity and the wallet rows in PostgreSQL,
// tier A is sold out at exactly its stock.
func smoke(ctx context.Context, t *testing.T, dir, addr, dsn string, edit func([]string) []string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	args := append([]string{"-Jprotocol=http", "-Jhost=" + host, "-Jport=" + port}, smokeProps...)
	if edit != nil {
		args = edit(args)
	}
	api := APIURL(args)
	before, err := FetchCoupons(ctx, api)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	jtl := filepath.Join(dir, "results.jtl")
	start := time.Now()
	if err := Run(ctx, RunOptions{Dir: ".", JTL: jtl, Args: args, Stdout: &out, Stderr: &out}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("JMeter ran for %v", time.Since(start).Round(time.Millisecond))
	samples, err := ReadJTLFile(jtl)
	if err != nil {
		t.Fatalf("%v\nJMeter output:\n%s", err, out.String())
	}
	after, err := FetchCoupons(ctx, api)
	if err != nil {
		t.Fatal(err)
	}
	s := Summarize(samples)
	var report bytes.Buffer
	s.Write(&report)
	WriteCoupons(&report, s, before, after)
	t.Logf("summary:\n%s", report.String())

	if s.Samples != smokeRequests {
		t.Errorf("the .jtl has %d samples, the plan sends %d", s.Samples, smokeRequests)
	}
	for _, p := range Verify(s, before, after) {
		t.Error(p)
	}
	if s.ServerError > 0 {
		t.Errorf("%d answers 5xx", s.ServerError)
	}
	stock := map[string]Coupon{}
	for _, c := range after {
		stock[c.Code] = c
	}
	if a := stock["A0001"]; a.TotalQuantity == 0 || a.IssuedQuantity != a.TotalQuantity || s.Issued["A0001"] != a.TotalQuantity {
		t.Errorf("A0001 (600 requests for %d coupons): issued %d, 201s %d; want exactly the stock", a.TotalQuantity, a.IssuedQuantity, s.Issued["A0001"])
	}
	if s.ByLabel["issue A0001"]["410"] == 0 {
		t.Errorf("A0001 never answered 410 SOLD_OUT: %v", s.ByLabel["issue A0001"])
	}
	for _, code := range []string{"B0001", "C0001"} {
		if s.Issued[code] != s.ByLabel["issue "+code]["201"] || s.Issued[code] == 0 {
			t.Errorf("%s: every fresh user should get one (stock exceeds demand): %v", code, s.ByLabel["issue "+code])
		}
	}
	checkWallets(ctx, t, dsn, s)
}

// stopService is the API's SIGTERM: the service drains and exits 0.
func stopService(t *testing.T, svc *service) {
	t.Helper()
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-svc.done:
		if svc.err != nil {
			t.Errorf("couponsvc after SIGTERM: %v, want exit status 0", svc.err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("couponsvc still running 15s after SIGTERM")
	}
}

// checkWallets compares the 201s with PostgreSQL itself: issued_quantity equals the wallet rows
// of each coupon, and the rows of this run equal its 201s.
func checkWallets(ctx context.Context, t *testing.T, dsn string, s Summary) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT c.code, c.issued_quantity, c.total_quantity, count(w.id)
		FROM coupon c LEFT JOIN coupon_wallet w ON w.coupon_id = c.id
		GROUP BY c.code, c.issued_quantity, c.total_quantity ORDER BY c.code`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var code string
		var issued, total, wallets int
		if err := rows.Scan(&code, &issued, &total, &wallets); err != nil {
			t.Fatal(err)
		}
		if issued != wallets || issued > total {
			t.Errorf("PostgreSQL %s: issued_quantity %d, wallet rows %d, total_quantity %d", code, issued, wallets, total)
		}
		if wallets != s.Issued[code] {
			t.Errorf("PostgreSQL %s: %d wallet rows, the .jtl has %d answers 201", code, wallets, s.Issued[code])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// buildService builds the couponsvc binary from the repository root (or takes COUPONSVC_BIN,
// a binary built already).
func buildService(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("COUPONSVC_BIN"); bin != "" {
		return bin
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	bin := filepath.Join(dir, "couponsvc")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", bin, ".")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build couponsvc: %v\n%s", err, out)
	}
	return bin
}

// service is a running couponsvc.
type service struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited; err is then its exit error
	err  error
}

// startService runs `couponsvc serve` with env and waits until /readyz answers 200; it is
// killed when the test ends, and its log is shown when the test failed.
func startService(ctx context.Context, t *testing.T, bin, dir string, env map[string]string) *service {
	t.Helper()
	logPath := filepath.Join(dir, "couponsvc.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	svc := &service{cmd: cmd, done: make(chan struct{})}
	go func() { svc.err = cmd.Wait(); close(svc.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		testenv.Receive(t, svc.done, 10*time.Second, "couponsvc exits after SIGKILL")
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("couponsvc log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	url := "http://" + env["HTTP_ADDR"] + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return svc
			}
		}
		select {
		case <-svc.done:
			t.Fatalf("couponsvc exited before it was ready: %v", svc.err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("couponsvc not ready on %s after 30s (last: %s)", url, statusOrErr(resp, err))
		}
	}
}

func statusOrErr(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return strconv.Itoa(resp.StatusCode)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
