package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"couponsvc/internal/idp"
)

// benchAudience is the instances' AUTH_AUDIENCE in the identity workload.
const benchAudience = "couponsvc-bench"

// startIdentity is the identity provider of W7: an RS256 key (2048 bits, what most providers
// sign access tokens with), its JWK Set served by this process on loopback, and a token for each
// request's user in wl.tokens. It returns the instances' AUTH_* settings and a func that stops
// serving.
func startIdentity(o options, wl *workload) (env []string, stop func(), err error) {
	key, err := idp.NewKey("RS256")
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	issuer := "http://" + ln.Addr().String()
	p, err := idp.New(issuer, key)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
	subjects := make([]string, len(wl.reqs))
	for i, r := range wl.reqs {
		subjects[i] = r.user.String() // a UUID subject is the user id as it is
	}
	start := time.Now()
	if wl.tokens, err = p.MintAll(subjects, idp.Claims{Audience: []string{benchAudience}, Lifetime: time.Hour}); err != nil {
		stop()
		return nil, nil, err
	}
	o.logf("%s: minted %s tokens in %v; JWK Set at %s/jwks.json", wl.name, thousands(len(subjects)), time.Since(start).Round(time.Millisecond), issuer)
	return []string{"AUTH_JWKS_URL=" + issuer + "/jwks.json", "AUTH_ISSUER=" + issuer, "AUTH_AUDIENCE=" + benchAudience}, stop, nil
}

// cpuOf is the instances' process_cpu_seconds_total summed (NaN when one cannot be read).
func cpuOf(ctx context.Context, srvs []*server) float64 {
	sum := 0.0
	for _, s := range srvs {
		v, ok := s.metrics(ctx)["process_cpu_seconds_total"]
		if !ok {
			return math.NaN()
		}
		sum += v
	}
	return sum
}

// cpuPerRequest is the instances' CPU time during the load per request sent (-1 when unknown).
func (r *result) cpuPerRequest() time.Duration {
	if math.IsNaN(r.cpuSeconds) || r.sent() == 0 {
		return -1
	}
	return time.Duration(r.cpuSeconds / float64(r.sent()) * float64(time.Second))
}

// identityLossTarget is the identity target: with identity on, the sold-out crowd (W1) loses at
// most 15% of its requests per second.
const identityLossTarget = 0.15

// identityTable compares W7 with W1 of the same run and deployment: what identity mode costs ("" when W7 did not run).
func (rep *report) identityTable() string {
	var b strings.Builder
	for _, dep := range rep.deployments() {
		w7 := rep.find(designCouponsvc, dep, "W7")
		if w7 == nil {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("| deployment | W1 req/s | W7 req/s (identity on) | change | W1 p99 ms | W7 p99 ms | CPU per request W1 → W7 (µs) | identity mode's cost per request (µs of CPU) | target: loss ≤ 15% |\n" +
				"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
		}
		w1 := rep.find(designCouponsvc, dep, "W1")
		if w1 == nil {
			fmt.Fprintf(&b, "| %s | — | %s | — | — | %s | — → %s | — | n/a (run W1 too) |\n", dep,
				thousands(int(w7.reqPerSec()+0.5)), fmtMs(w7.pct(0.99)), fmtMicros(w7.cpuPerRequest()))
			continue
		}
		change := w7.reqPerSec()/w1.reqPerSec() - 1
		verdict := "PASS"
		if -change > identityLossTarget {
			verdict = "MISS"
		}
		cost := "—"
		if a, c := w1.cpuPerRequest(), w7.cpuPerRequest(); a >= 0 && c >= 0 {
			cost = fmt.Sprintf("%+.1f", float64(c-a)/float64(time.Microsecond))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %+.1f%% | %s | %s | %s → %s | %s | %s |\n", dep,
			thousands(int(w1.reqPerSec()+0.5)), thousands(int(w7.reqPerSec()+0.5)), 100*change,
			fmtMs(w1.pct(0.99)), fmtMs(w7.pct(0.99)), fmtMicros(w1.cpuPerRequest()), fmtMicros(w7.cpuPerRequest()), cost, verdict)
	}
	if b.Len() == 0 {
		return ""
	}
	b.WriteString("\nW7 is W1 with the instances in identity mode: every request carries its user's RS256 access token. couponsvc verifies it " +
		"(signature against the cached JWK Set, iss, aud, exp) before any other work, except when the answer is the same for every user: " +
		"once the coupon is sold out, the rest of the crowd is answered 410 from the instance's cache before the signature check " +
		"(docs/IDENTITY.md, \"What is verified\"), so in W7 about the first stock's worth of requests are verified. CPU per request: the instances' " +
		"process_cpu_seconds_total over the load phase divided by the requests sent; the difference is what identity mode costs each request. " +
		"`go test -bench Verify ./internal/auth` measures one verification alone.\n")
	return b.String()
}

// fmtMicros formats a CPU time per request in µs ("?" when unknown: -1).
func fmtMicros(d time.Duration) string {
	if d == -1 {
		return "?"
	}
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond))
}
