package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// couponDef is a coupon a workload creates itself.
type couponDef struct {
	code  string
	stock int
}

// issueReq is one request of a workload: user asks for coupon code.
type issueReq struct {
	code string
	user uuid.UUID
}

// workload is a list of requests sent by a number of concurrent clients.
type workload struct {
	name    string
	title   string
	clients int
	barrier bool           // one request per client, all released at once
	reqs    []issueReq     // in dispatch order (W6: the requests sent, filled in by the run)
	extra   []couponDef    // coupons to create besides the seeded tiers
	stock   map[string]int // stock of every coupon the workload asks for
	opening *opening       // W6: a coupon created through the admin API, opening later
	// identity: the instances run in identity mode, trusting a JWK Set the bench serves, and
	// every request carries its user's token, tokens[i] for reqs[i] (W7).
	identity bool
	tokens   []string
	// eligibleNs: only requests sent at or after it (since the load started) count as askers
	// in the FCFS figures (W6: the opening; before it no request can win).
	eligibleNs int64
}

// opening is W6's coupon: created through couponsvc's admin API with opensAt `lead` in the
// future; the clients send fresh users from `early` before the opening until it is sold out,
// for at most `limit` after the opening.
type opening struct {
	code               string
	stock              int
	lead, early, limit time.Duration
	opensAt            time.Time // set by the run (monotonic reading kept)
}

// allWorkloads are the workloads the bench knows, in the order they run.
var allWorkloads = []string{"W1", "W2", "W3", "W4", "W5", "W6", "W7"}

// referenceSkips says why the reference design does not run a workload ("" when it does).
func referenceSkips(name string) string {
	switch name {
	case "W6":
		return "the reference design has no issuing windows (opensAt)"
	case "W7":
		return "the reference design has no identity mode"
	}
	return ""
}

// Demo tiers seeded by couponsvc migrate (contract).
var demoStock = map[string]int{"A0001": 300, "B0001": 2000, "C0001": 10000}

func buildWorkload(name string, quick bool) *workload {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 42))
	switch name {
	case "W1", "W7": // sold-out crowd: distinct users on A0001 (stock 300); W7 with identity on
		users, clients := 10000, 200
		if quick {
			users, clients = 2000, 50
		}
		w := &workload{name: name, clients: clients, stock: map[string]int{"A0001": 300}, identity: name == "W7",
			title: fmt.Sprintf("sold-out crowd: %s distinct users on A0001 (stock 300), %d clients", thousands(users), clients)}
		if w.identity {
			w.title = "W1 with identity on: the same crowd against instances in identity mode, each request with its user's bearer token " +
				"(RS256, 2048-bit key, verified against a JWK Set the bench serves; couponsvc only)"
		}
		for range users {
			w.reqs = append(w.reqs, issueReq{code: "A0001", user: uuid.New()})
		}
		return w
	case "W2": // released at once on a fresh coupon of stock 100
		users, stock := 1000, 100
		if quick {
			users = 300
		}
		w := &workload{name: name, clients: users, barrier: true, extra: []couponDef{{"HUNDRED", stock}},
			stock: map[string]int{"HUNDRED": stock},
			title: fmt.Sprintf("%s users released at once on a fresh coupon of stock %d", thousands(users), stock)}
		for range users {
			w.reqs = append(w.reqs, issueReq{code: "HUNDRED", user: uuid.New()})
		}
		return w
	case "W3": // mixed tiers, 20% retries by users who already asked
		total, users, clients := 30000, 8000, 500
		if quick {
			total, users, clients = 3000, 800, 100
		}
		w := &workload{name: name, clients: clients, stock: demoStock,
			title: fmt.Sprintf("mixed: %s requests over A0001/B0001/C0001, %s users, 20%% retries, %d clients",
				thousands(total), thousands(users), clients)}
		w.reqs = mixedRequests(rng, total, users, clients)
		return w
	case "W4": // hot coupon with more demand than its large stock
		users, clients, code, stock := 12000, 400, "C0001", 10000
		w := &workload{name: name, clients: clients}
		if quick {
			users, clients, code, stock = 1200, 100, "CQUICK", 1000
			w.clients = clients
			w.extra = []couponDef{{code, stock}}
		}
		w.stock = map[string]int{code: stock}
		w.title = fmt.Sprintf("%s users on %s (stock %s), %d clients", thousands(users), code, thousands(stock), clients)
		for range users {
			w.reqs = append(w.reqs, issueReq{code: code, user: uuid.New()})
		}
		return w
	case "W5": // many coupons at once: each user asks for one of 100 coupons, at random
		coupons, stock, users, clients := 100, 50, 20000, 400
		if quick {
			stock, users, clients = 5, 2000, 100
		}
		w := &workload{name: name, clients: clients, stock: map[string]int{},
			title: fmt.Sprintf("many coupons at once: %s distinct users, each on one of %d coupons M001..M%03d (stock %d each, %s in all) at random, %d clients",
				thousands(users), coupons, coupons, stock, thousands(coupons*stock), clients)}
		codes := make([]string, coupons)
		for i := range codes {
			codes[i] = fmt.Sprintf("M%03d", i+1)
			w.extra = append(w.extra, couponDef{codes[i], stock})
			w.stock[codes[i]] = stock
		}
		for range users {
			w.reqs = append(w.reqs, issueReq{code: codes[rng.IntN(coupons)], user: uuid.New()})
		}
		return w
	case "W6": // the opening moment (couponsvc only: the reference has no issuing windows)
		stock, clients := 100, 200
		if quick { // the same ratio: the requests in flight at the opening outnumber the stock
			stock, clients = 25, 50
		}
		op := &opening{code: "OPENING", stock: stock, lead: 2 * time.Second, early: time.Second, limit: 20 * time.Second}
		return &workload{name: name, clients: clients, opening: op, stock: map[string]int{op.code: stock},
			title: fmt.Sprintf("the opening moment: a coupon of stock %d created through the admin API with opensAt %v later; "+
				"%d clients send fresh users from %v before the opening until it is sold out (at most %v after the opening); couponsvc only",
				stock, op.lead, clients, op.early, op.limit)}
	}
	panic("unknown workload " + name)
}

// mixedRequests: users x tiers shuffled, with 20% of the requests being retries of a pair that
// was dispatched at least `clients` requests earlier (so it was already asked).
func mixedRequests(rng *rand.Rand, total, nUsers, clients int) []issueReq {
	tiers := []string{"A0001", "B0001", "C0001"}
	retries := total / 5
	firsts := total - retries
	users := make([]uuid.UUID, nUsers)
	for i := range users {
		users[i] = uuid.New()
	}
	pairs := make([]issueReq, 0, nUsers*len(tiers))
	for _, u := range users {
		for _, t := range tiers {
			pairs = append(pairs, issueReq{code: t, user: u})
		}
	}
	rng.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
	if firsts > len(pairs) {
		firsts = len(pairs)
		retries = total - firsts
	}
	pairs = pairs[:firsts]
	out := make([]issueReq, 0, total)
	next := 0
	for i := 0; i < total; i++ {
		left := total - i
		canRetry := len(out) > clients
		if next >= len(pairs) || (canRetry && retries > 0 && rng.IntN(left) < retries) {
			if !canRetry || retries == 0 { // cannot happen with the sizes used; keep the count exact
				break
			}
			out = append(out, out[rng.IntN(len(out)-clients)])
			retries--
			continue
		}
		out = append(out, pairs[next])
		next++
	}
	return out
}

// sample is the outcome of one request.
type sample struct {
	sent     bool
	sendNs   int64  // when the request was written, since the load started (monotonic)
	latNs    int64  // from the write to the end of the answer
	endNs    int64  // end of the answer, since the load started
	status   int    // HTTP status; 0 = transport error
	errCode  string // error code of a non-2xx answer
	walletID string // id of a 201's wallet entry
	transErr string
}

// loadResult is the outcome of driving a workload.
type loadResult struct {
	samples  []sample
	duration time.Duration // first send to last answer
	capped   bool          // the time limit stopped dispatching
	notSent  int
}

// epoch is the origin of the write stamps (monotonic).
var epoch = time.Now()

// loadClient drives a workload over keep-alive connections it owns, one per concurrent client,
// writing prebuilt HTTP/1.1 requests and parsing the answers with net/http's ReadResponse. A
// client owning its connection can stamp the exact moment a request's bytes go to the socket (on
// loopback the write hands them to the service's socket), and it costs the shared CPUs a fraction
// of net/http's Transport (no per-connection goroutines, no channel handoffs, no request
// objects), which on a machine where the load generator competes with the service for the same
// cores is part of what is measured.
type loadClient struct {
	addr  string // host:port
	conns []*rawConn
}

type rawConn struct {
	c      net.Conn
	br     *bufio.Reader
	body   []byte // the last answer's body, reused
	broken bool
}

func newLoadClient(clients int) *loadClient { return &loadClient{conns: make([]*rawConn, clients)} }

func (lc *loadClient) close() {
	for _, rc := range lc.conns {
		if rc != nil {
			rc.c.Close()
		}
	}
}

func (lc *loadClient) dial(ctx context.Context) (*rawConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", lc.addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReaderSize(c, 4096)}, nil
}

// roundTrip writes one request and reads its answer; sendNs is when the write started, since
// epoch. The body is only valid until the next roundTrip.
func (rc *rawConn) roundTrip(req []byte) (status int, body []byte, sendNs int64, err error) {
	sendNs = int64(time.Since(epoch))
	if _, err = rc.c.Write(req); err != nil {
		rc.broken = true
		return 0, nil, sendNs, err
	}
	status, body, err = rc.readAnswer()
	if err != nil {
		rc.broken = true
	}
	return status, body, sendNs, err
}

// readAnswer reads one HTTP/1.1 response framed by Content-Length, which is how both servers
// send these small JSON answers (anything else is reported as an error). It is a load
// generator's parser, not a general one: net/http's ReadResponse (a header map and a textproto
// reader per answer) and encoding/json took a third of the load generator's CPU, and that CPU is
// taken from the servers it measures.
func (rc *rawConn) readAnswer() (status int, body []byte, err error) {
	line, err := rc.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	length := -1
	for {
		if line, err = rc.br.ReadSlice('\n'); err != nil {
			return 0, nil, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, nil, fmt.Errorf("malformed Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			rc.broken = true // answered, then closed: the next request redials
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, nil, fmt.Errorf("unsupported Transfer-Encoding %q", value)
		}
	}
	if length < 0 {
		return 0, nil, errors.New("answer without Content-Length")
	}
	if cap(rc.body) < length {
		rc.body = make([]byte, length)
	}
	body = rc.body[:length]
	_, err = io.ReadFull(rc.br, body)
	return status, body, err
}

// jsonString is the value of the first "key":"value" pair in compact JSON ("" when absent).
func jsonString(body []byte, key string) string {
	_, rest, ok := bytes.Cut(body, []byte(`"`+key+`":"`))
	if !ok {
		return ""
	}
	v, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(v)
}

// prewarm opens n keep-alive connections, each answering one GET /healthz, so that the timed
// load measures the service rather than TCP handshakes.
func (lc *loadClient) prewarm(ctx context.Context, base string, n int) error {
	lc.addr = strings.TrimPrefix(base, "http://")
	probe := []byte("GET /healthz HTTP/1.1\r\nHost: " + lc.addr + "\r\n\r\n")
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, err := lc.dial(ctx)
			if err == nil {
				var status int
				if status, _, _, err = rc.roundTrip(probe); err == nil && status != http.StatusOK {
					err = fmt.Errorf("GET /healthz: %d", status)
				}
				if err != nil {
					rc.c.Close()
				}
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			lc.conns[i] = rc
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > int64(n)/10 {
		return fmt.Errorf("%d of %d failed, e.g. %v", f, n, firstErr.Load())
	}
	return nil
}

// drive sends the workload's requests with its number of concurrent clients and records every
// answer. Dispatching stops at limit (the requests not yet sent are reported as not sent).
func (lc *loadClient) drive(ctx context.Context, base string, wl *workload, limit time.Duration) loadResult {
	n := len(wl.reqs)
	samples := make([]sample, n)
	reqs := make([][]byte, n)
	for i, r := range wl.reqs {
		var token string
		if wl.tokens != nil {
			token = wl.tokens[i]
		}
		reqs[i] = lc.issueRequest(r, token)
	}
	var next atomic.Int64
	var capped atomic.Bool
	start := time.Now()
	deadline := start.Add(limit)
	var wg sync.WaitGroup
	if wl.barrier {
		gate := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); <-gate; lc.send(ctx, i, reqs[i], &samples[i], start) }()
		}
		time.Sleep(100 * time.Millisecond) // every goroutine parked at the gate
		start = time.Now()
		close(gate)
	} else {
		for k := range wl.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= n || ctx.Err() != nil {
						return
					}
					if time.Now().After(deadline) {
						capped.Store(true)
						return
					}
					lc.send(ctx, k, reqs[i], &samples[i], start)
				}
			}()
		}
	}
	wg.Wait()
	return summarize(samples, capped.Load())
}

// send sends req on client k's connection (redialled after a transport error) and records the
// outcome in s, with times since start.
func (lc *loadClient) send(ctx context.Context, k int, req []byte, s *sample, start time.Time) {
	startOff := int64(start.Sub(epoch))
	s.sent = true
	rc := lc.conns[k]
	if rc == nil || rc.broken {
		if rc != nil {
			rc.c.Close()
		}
		var err error
		if rc, err = lc.dial(ctx); err != nil {
			lc.conns[k] = nil
			s.sendNs, s.endNs = int64(time.Since(start)), int64(time.Since(start))
			s.transErr = err.Error()
			return
		}
		lc.conns[k] = rc
	}
	rc.c.SetDeadline(time.Now().Add(60 * time.Second))
	status, body, sendNs, err := rc.roundTrip(req)
	end := int64(time.Since(epoch))
	s.sendNs, s.endNs, s.latNs = sendNs-startOff, end-startOff, end-sendNs
	if err != nil {
		s.transErr = err.Error()
		return
	}
	s.status = status
	if status == http.StatusCreated {
		s.walletID = jsonString(body, "id")
	} else {
		s.errCode = jsonString(body, "code")
	}
}

// issueRequest is the HTTP/1.1 request of r, prebuilt; with a token, the user's bearer token
// (the body names the same user: identity mode accepts that, and checks it is the token's).
func (lc *loadClient) issueRequest(r issueReq, token string) []byte {
	body := `{"userId":"` + r.user.String() + `"}`
	var auth string
	if token != "" {
		auth = "\r\nAuthorization: Bearer " + token
	}
	return []byte("POST /api/v1/coupons/" + r.code + "/issue HTTP/1.1\r\nHost: " + lc.addr + auth +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// driveOpening runs W6: from op.early before op.opensAt, every client sends a fresh user after
// another to the coupon until any answer says SOLD_OUT, or until op.limit after the opening.
// It returns the requests sent (the workload's reqs, in the order of the samples) and the
// opening as an offset of the samples' clock.
func (lc *loadClient) driveOpening(ctx context.Context, wl *workload) (loadResult, []issueReq, int64) {
	op := wl.opening
	if d := time.Until(op.opensAt.Add(-op.early)); d > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	start := time.Now()
	until := op.opensAt.Add(op.limit)
	var soldOut, capped atomic.Bool
	type sent struct {
		req issueReq
		s   sample
	}
	perClient := make([][]sent, wl.clients)
	var wg sync.WaitGroup
	for k := range wl.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !soldOut.Load() && ctx.Err() == nil {
				if time.Now().After(until) {
					capped.Store(true)
					return
				}
				x := sent{req: issueReq{code: op.code, user: uuid.New()}}
				lc.send(ctx, k, lc.issueRequest(x.req, ""), &x.s, start)
				perClient[k] = append(perClient[k], x)
				if x.s.status == http.StatusGone {
					soldOut.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	var reqs []issueReq
	var samples []sample
	for _, list := range perClient {
		for _, x := range list {
			reqs = append(reqs, x.req)
			samples = append(samples, x.s)
		}
	}
	return summarize(samples, capped.Load() && !soldOut.Load()), reqs, int64(op.opensAt.Sub(start))
}

// summarize makes the load result of the samples: duration from the load's start to the last
// answer, and the requests not sent.
func summarize(samples []sample, capped bool) loadResult {
	res := loadResult{samples: samples, capped: capped}
	var end int64
	for i := range samples {
		if !samples[i].sent {
			res.notSent++
			continue
		}
		end = max(end, samples[i].endNs)
	}
	res.duration = time.Duration(end)
	return res
}
