package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
)

// Bounds of the Swagger UI test. Measured on two shared cores: Chromium starts in about a second
// and the whole walk takes a few; the bounds leave room for a machine busy with other tests.
const (
	swaggerUITestBudget = 3 * time.Minute  // everything, the browser's start included
	browserStartWait    = 60 * time.Second // Chromium's start, up to its DevTools address
	uiStepWait          = 45 * time.Second // any one step: a page load, an element, an answer
)

// TestSwaggerUI uses the service the way testers do, through Swagger UI in a real browser
// (headless Chromium over the DevTools protocol), against the real service on throwaway
// PostgreSQL and Redis: it opens /swagger/index.html, expands the issue operation and checks
// the examples it shows (a fresh entry under 201, ALREADY_ISSUED under 409), clicks "Try it
// out", fills the code and a fresh user, clicks "Execute" and must read 201, then "Execute"
// again and must read 409 ALREADY_ISSUED.
func TestSwaggerUI(t *testing.T) {
	chromium := chromiumPath(t)
	in := startInstance(t, newStack(t, 1).env(nil))
	started := time.Now()
	ui := openBrowser(t, chromium)

	ui.step("Swagger UI shows the issue operation", chromedp.Navigate(in.base+"/swagger/index.html"),
		chromedp.WaitVisible(`.opblock-post .opblock-summary-path[data-path="/api/v1/coupons/{code}/issue"]`, chromedp.ByQuery))
	// Swagger UI names an operation's block operations-<tag>-<operationId>; the id is read from
	// the page rather than assumed, as swag writes no operationId.
	var id string
	ui.step("the issue operation's block id", chromedp.Evaluate(`document.querySelector(
		'.opblock-post .opblock-summary-path[data-path="/api/v1/coupons/{code}/issue"]').closest('.opblock').id`, &id))
	if id == "" {
		t.Fatal("the issue operation's block has no id")
	}
	op := "#" + id
	ui.step("expand the issue operation", chromedp.Click(op+" .opblock-summary-control", chromedp.ByQuery),
		chromedp.WaitVisible(op+" .try-out__btn", chromedp.ByQuery))

	// The documented answers, as Swagger UI renders their examples.
	created := ui.text("the 201 example", op+` .responses-table tr.response[data-code="201"] .example`)
	for _, want := range []string{`"redeemedAt": null`, `"orderId": null`} {
		if !strings.Contains(created, want) {
			t.Errorf("the 201 example should show a fresh entry (%s); it shows:\n%s", want, created)
		}
	}
	for _, e := range []struct{ status, code string }{{"400", "INVALID_REQUEST"}, {"403", "EVENT_NOT_OPEN"},
		{"404", "COUPON_NOT_FOUND"}, {"409", "ALREADY_ISSUED"}, {"410", "SOLD_OUT"}, {"429", "TOO_MANY_REQUESTS"}, {"503", "LOCK_TIMEOUT"}} {
		if ex := ui.text("the "+e.status+" example", op+` .responses-table tr.response[data-code="`+e.status+`"] .example`); !strings.Contains(ex, `"`+e.code+`"`) {
			t.Errorf("the %s example should show %s; it shows:\n%s", e.status, e.code, ex)
		}
	}

	// Try it out: B0001 (not the A0001 the form starts with, so that the answer shows the
	// code was typed in) for a user never seen.
	user := uuid.New()
	ui.step(`"Try it out"`, chromedp.Click(op+" .try-out__btn", chromedp.ByQuery),
		chromedp.WaitVisible(op+` tr[data-param-name="code"] input`, chromedp.ByQuery),
		chromedp.WaitVisible(op+" textarea.body-param__text", chromedp.ByQuery))
	ui.typeOver("the code", op+` tr[data-param-name="code"] input`, "B0001")
	ui.typeOver("the body", op+" textarea.body-param__text", `{"userId":"`+user.String()+`"}`)

	status, body := ui.execute(op)
	if status != "201" || !strings.Contains(body, user.String()) || !strings.Contains(body, `"couponCode": "B0001"`) {
		t.Fatalf("first Execute: Swagger UI shows %s, want 201 with a B0001 entry for %s:\n%s", status, user, body)
	}
	status, body = ui.execute(op)
	if status != "409" || !strings.Contains(body, "ALREADY_ISSUED") {
		t.Fatalf("second Execute for the same user: Swagger UI shows %s, want 409 ALREADY_ISSUED:\n%s", status, body)
	}
	t.Logf("Swagger UI walk (browser start included): %v", time.Since(started).Round(time.Millisecond))

	// What the browser did happened in the service: the user holds exactly that coupon.
	a := do(t, http.MethodGet, in.base+"/api/v1/users/"+user.String()+"/coupons", "")
	var wallet []struct{ CouponCode string }
	if err := json.Unmarshal(a.body, &wallet); a.status != http.StatusOK || err != nil || len(wallet) != 1 || wallet[0].CouponCode != "B0001" {
		t.Fatalf("the user's wallet after the browser's two issues: %d %s; want one B0001 entry", a.status, a.body)
	}
}

// chromiumPath finds the browser. Missing, it fails the test under CI=true, and otherwise skips
// it saying how to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const missing = "Chromium not found; install it with: sudo apt-get update && sudo apt-get install -y chromium (make test does this when run as root)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but %s", missing)
	}
	t.Skipf("skipping the Swagger UI browser test: %s", missing)
	return ""
}

// browserUI is a headless Chromium tab; every step it takes has a deadline, after which the test
// fails saying which step and what the page showed.
type browserUI struct {
	t   *testing.T
	ctx context.Context
}

// openBrowser starts headless Chromium and opens a tab; a browser that does not start fails the
// test (in CI and out of it: it is installed, so it must work). Both close when the test ends.
func openBrowser(t *testing.T, path string) *browserUI {
	t.Helper()
	budget, cancelBudget := context.WithTimeout(context.Background(), swaggerUITestBudget)
	// Not t.TempDir: Chromium's helper processes may still write the profile for a moment
	// after the browser exits, and TempDir's cleanup then fails the test.
	profile, err := os.MkdirTemp("", "couponsvc-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.WSURLReadTimeout(browserStartWait),
		// As root (CI, these machines) Chromium's sandbox cannot start; the page is our own.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1280, 1600),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(budget, opts...)
	var logs strings.Builder
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(f string, a ...any) {
		fmt.Fprintf(&logs, f+"\n", a...)
	}))
	t.Cleanup(func() {
		cancelTab() // closes the tab and the browser, and waits for it to exit
		cancelAlloc()
		cancelBudget()
		for deadline := time.Now().Add(5 * time.Second); os.RemoveAll(profile) != nil && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
	})
	// The first Run starts the browser, bound by browserStartWait (and the test's budget).
	start := time.Now()
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("Chromium (%s) did not start: %v\n%s", path, err, logs.String())
	}
	t.Logf("Chromium started in %v", time.Since(start).Round(time.Millisecond))
	return &browserUI{t: t, ctx: ctx}
}

// step runs actions within uiStepWait, or fails the test naming the step.
func (b *browserUI) step(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiStepWait)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.t.Fatalf("Swagger UI, %s: %v (step bound %v)\npage:\n%s", what, err, uiStepWait, b.pageText())
	}
}

// text is the visible text of the element sel.
func (b *browserUI) text(what, sel string) string {
	b.t.Helper()
	var s string
	b.step(what, chromedp.WaitVisible(sel, chromedp.ByQuery), chromedp.Text(sel, &s, chromedp.ByQuery))
	return s
}

// typeOver replaces the text of the input or textarea sel by typing, as a person does: Swagger
// UI's fields are React-controlled, so setting .value would not reach its state.
func (b *browserUI) typeOver(what, sel, text string) {
	b.t.Helper()
	var got string
	b.step("type "+what, chromedp.Focus(sel, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector(`+jsString(sel)+`).select()`, nil),
		chromedp.KeyEvent(text),
		chromedp.Value(sel, &got, chromedp.ByQuery))
	if got != text {
		b.t.Fatalf("Swagger UI, %s: typed %q, the field holds %q", what, text, got)
	}
}

// execute clicks the operation's Execute and returns the status and body Swagger UI shows for
// the answer. A previous answer is cleared first, so the one read is this request's.
func (b *browserUI) execute(op string) (status, body string) {
	b.t.Helper()
	live := op + " .live-responses-table"
	var shown bool
	b.step("look for a previous answer", chromedp.Evaluate(`!!document.querySelector(`+jsString(live)+`)`, &shown))
	if shown {
		b.step("clear the previous answer", chromedp.Click(op+" .btn-clear", chromedp.ByQuery),
			chromedp.WaitNotPresent(live, chromedp.ByQuery))
	}
	b.step(`"Execute"`, chromedp.Click(op+" .execute", chromedp.ByQuery),
		chromedp.WaitVisible(live+" .response .response-col_status", chromedp.ByQuery),
		chromedp.Text(live+" .response .response-col_status", &status, chromedp.ByQuery),
		chromedp.Text(live+" .response .response-col_description", &body, chromedp.ByQuery))
	return strings.TrimSpace(status), body
}

// pageText is the page's visible text, cut short, for a failure message; empty when the page
// cannot be read either.
func (b *browserUI) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	var s string
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.body ? document.body.innerText : ""`, &s)); err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	if len(s) > 4000 {
		s = s[:4000] + "\n…"
	}
	return s
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
