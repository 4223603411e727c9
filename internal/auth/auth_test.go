package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"couponsvc/internal/auth"
	"couponsvc/internal/idp"

	"github.com/google/uuid"
)

func TestUserID(t *testing.T) {
	const iss = "https://id.example.com/realms/shop"
	u := uuid.New()
	if got := auth.UserID(iss, u.String()); got != u {
		t.Errorf("a canonical UUID subject must be the user id as it is: %s, want %s", got, u)
	}
	ns := uuid.NewSHA1(uuid.NameSpaceURL, []byte(iss))
	for _, sub := range []string{"auth0|65f0c0ffee", strings.ToUpper(u.String()), "{" + u.String() + "}",
		uuid.Nil.String(), "urn:uuid:" + u.String(), "ChUxMjM0NTY3ODkwEgVsb2NhbA"} {
		got := auth.UserID(iss, sub)
		if want := uuid.NewSHA1(ns, []byte(sub)); got != want {
			t.Errorf("subject %q: %s, want the v5 UUID %s of the subject in the issuer's namespace", sub, got, want)
		}
		if got == u || got == uuid.Nil {
			t.Errorf("subject %q mapped to %s", sub, got)
		}
		if auth.UserID(iss+"/other", sub) == got {
			t.Errorf("subject %q: the same user id under another issuer", sub)
		}
	}
}

func TestCheckAlgorithm(t *testing.T) {
	for _, alg := range auth.Algorithms {
		if err := auth.CheckAlgorithm(alg); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	for _, alg := range []string{"none", "NONE", "HS256", "hs512", "RS1", ""} {
		if auth.CheckAlgorithm(alg) == nil {
			t.Errorf("%q accepted", alg)
		}
	}
}

// provider serves a local identity provider's JWK Set and counts the fetches; fail makes it
// answer 500, huge a body over the verifier's limit.
type provider struct {
	*idp.Provider
	srv        *httptest.Server
	fetches    atomic.Int64
	fail, huge atomic.Bool
}

func newProvider(t *testing.T) *provider {
	t.Helper()
	key, err := idp.NewKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	p := &provider{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		switch {
		case p.fail.Load():
			http.Error(w, "down", http.StatusInternalServerError)
		case p.huge.Load():
			w.Write([]byte(`{"keys":[` + strings.Repeat(" ", 2<<20) + `]}`))
		default:
			p.Provider.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	if p.Provider, err = idp.New(p.srv.URL, key); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *provider) verifier(t *testing.T, minRefresh time.Duration) *auth.Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := auth.New(ctx, auth.Config{JWKSURL: p.srv.URL + "/jwks.json", Issuer: p.srv.URL, Audience: "api",
		Algorithms: []string{"RS256", "ES256"}, ClockSkew: auth.DefaultClockSkew, MinRefreshInterval: minRefresh})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (p *provider) bearer(t testing.TB, key *idp.Key, c idp.Claims) string {
	t.Helper()
	if c.Subject == "" {
		c.Subject = uuid.NewString()
	}
	if c.Audience == nil {
		c.Audience = []string{"api"}
	}
	tok, err := p.MintWith(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

func reason(err error) string {
	var e *auth.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "not an *auth.Error: " + err.Error()
}

// TestKeyRefresh: the JWK Set is fetched once at start; a crowd of tokens of a newly published
// key costs one fetch, shared; a made-up kid within the pause costs none and is refused at once;
// after the pause, one fetch; a failed or oversized fetch keeps the keys fetched before.
func TestKeyRefresh(t *testing.T) {
	p := newProvider(t)
	const pause = time.Second
	v := p.verifier(t, pause)
	ctx := context.Background()
	if n := p.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	first := p.Key()
	if _, err := v.Verify(ctx, p.bearer(t, first, idp.Claims{})); err != nil {
		t.Fatalf("a token of the published key: %v", err)
	}

	// The provider announces and signs with a new key after the verifier's last fetch.
	time.Sleep(pause)
	next, err := idp.NewKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Rotate(next, true); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var refused atomic.Int64
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Verify(ctx, p.bearer(t, next, idp.Claims{Scope: "openid coupons:redeem"})); err != nil {
				refused.Add(1)
				t.Errorf("a token of the new key: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := p.fetches.Load(); n != 2 {
		t.Errorf("%d fetches after 50 concurrent tokens of a new key, want 2 (one shared fetch)", n)
	}
	id, err := v.Verify(ctx, p.bearer(t, next, idp.Claims{Scope: "openid coupons:redeem"}))
	if err != nil || !id.CanRedeem {
		t.Errorf("scope coupons:redeem: %+v, %v", id, err)
	}

	// Made-up kids inside the pause: refused at once, no fetch.
	stranger, err := idp.NewKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	strangers := make([]string, 100)
	for i := range strangers {
		strangers[i] = p.bearer(t, stranger, idp.Claims{})
	}
	start := time.Now()
	for _, h := range strangers {
		if _, err := v.Verify(ctx, h); reason(err) != auth.ReasonUnknownKey {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if took := time.Since(start); took > pause/2 {
		t.Errorf("100 unknown-key refusals took %v: they must not wait", took)
	}
	if n := p.fetches.Load(); n != 2 {
		t.Errorf("%d fetches after made-up kids inside the pause, want still 2", n)
	}
	time.Sleep(pause)
	if _, err := v.Verify(ctx, p.bearer(t, stranger, idp.Claims{})); reason(err) != auth.ReasonUnknownKey {
		t.Fatalf("unknown key after the pause: %v", err)
	}
	if n := p.fetches.Load(); n != 3 {
		t.Errorf("%d fetches after the pause, want 3", n)
	}

	// The provider fails, then sends too much: the keys fetched before stay.
	for _, broken := range []*atomic.Bool{&p.fail, &p.huge} {
		broken.Store(true)
		time.Sleep(pause)
		before := p.fetches.Load()
		if _, err := v.Verify(ctx, p.bearer(t, stranger, idp.Claims{})); reason(err) != auth.ReasonUnknownKey {
			t.Fatalf("unknown key: %v", err)
		}
		if p.fetches.Load() != before+1 {
			t.Fatalf("no fetch was tried")
		}
		if _, err := v.Verify(ctx, p.bearer(t, first, idp.Claims{})); err != nil {
			t.Errorf("the keys fetched before were dropped after a failed fetch: %v", err)
		}
		broken.Store(false)
	}
}

// TestVerifyRefusals: the reasons of the verifier's refusals (the service's test sends them over
// HTTP; this one checks the mapping of the library's errors).
func TestVerifyRefusals(t *testing.T) {
	p := newProvider(t)
	v := p.verifier(t, time.Hour)
	k := p.Key()
	now := time.Now()
	for _, c := range []struct {
		name, authorization, reason string
	}{
		{"empty", "", auth.ReasonMissing},
		{"scheme only", "Bearer", auth.ReasonMissing},
		{"lower-case scheme accepted, bad token", "bearer x.y.z", auth.ReasonMalformed},
		{"expired beyond the skew", p.bearer(t, k, idp.Claims{IssuedAt: now.Add(-time.Hour - time.Minute), Lifetime: time.Hour}), auth.ReasonExpired},
		{"nbf beyond the skew", p.bearer(t, k, idp.Claims{NotBefore: now.Add(time.Minute)}), auth.ReasonNotYetValid},
		{"audience", p.bearer(t, k, idp.Claims{Audience: []string{"other"}}), auth.ReasonAudience},
	} {
		_, err := v.Verify(context.Background(), c.authorization)
		if got := reason(err); got != c.reason {
			t.Errorf("%s: reason %s, want %s (%v)", c.name, got, c.reason, err)
		}
	}
	// Within the 30 s skew (AUTH_CLOCK_SKEW's default): accepted.
	for _, c := range []idp.Claims{
		{IssuedAt: now.Add(-time.Hour - 10*time.Second), Lifetime: time.Hour},
		{NotBefore: now.Add(10 * time.Second)},
		{IssuedAt: now.Add(10 * time.Second)},
	} {
		if _, err := v.Verify(context.Background(), p.bearer(t, k, c)); err != nil {
			t.Errorf("%+v within the clock skew: %v", c, err)
		}
	}
}

// TestClaimed: the unverified user of a token is the one Verify finds in it once verified, for
// UUID and other subjects, also of tokens that fail verification; no subject, or no JWT, is none.
func TestClaimed(t *testing.T) {
	p := newProvider(t)
	v := p.verifier(t, time.Hour)
	for _, sub := range []string{uuid.NewString(), "auth0|65f0c0ffee"} {
		h := p.bearer(t, p.Key(), idp.Claims{Subject: sub})
		id, err := v.Verify(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := v.Claimed(h); !ok || got != id.User {
			t.Errorf("Claimed(%s) = %s %v, Verify found %s", sub, got, ok, id.User)
		}
		expired := p.bearer(t, p.Key(), idp.Claims{Subject: sub, IssuedAt: time.Now().Add(-3 * time.Hour), Lifetime: time.Hour})
		if got, ok := v.Claimed(expired); !ok || got != id.User {
			t.Errorf("Claimed of an expired token of %s = %s %v, want %s (unverified)", sub, got, ok, id.User)
		}
	}
	for _, h := range []string{"", "Bearer", "Basic abc", "Bearer x.y.z", "Bearer a.b", "Bearer " + strings.Repeat("a", auth.MaxTokenBytes+1),
		"Bearer eyJhbGciOiJub25lIn0.e30.",            // {} : no sub
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIifQ.", // sub ""
		"Bearer eyJhbGciOiJub25lIn0.bm90IGpzb24.",    // not JSON
	} {
		if got, ok := v.Claimed(h); ok {
			t.Errorf("Claimed(%.40q) = %s, want none", h, got)
		}
	}
}

// BenchmarkVerify is what identity mode adds to a user request with a token not seen before:
// parsing and verifying an RS256 access token (2048-bit key) against the cached JWK Set.
func BenchmarkVerify(b *testing.B) { benchmarkVerify(b, false) }

// BenchmarkVerifyRemembered is the same token again (a retry): found among the tokens verified
// recently.
func BenchmarkVerifyRemembered(b *testing.B) { benchmarkVerify(b, true) }

func benchmarkVerify(b *testing.B, again bool) {
	key, err := idp.NewKey("RS256")
	if err != nil {
		b.Fatal(err)
	}
	prov, err := idp.New("http://placeholder", key)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(prov)
	defer srv.Close()
	prov.Issuer = srv.URL
	v, err := auth.New(b.Context(), auth.Config{JWKSURL: srv.URL + "/jwks.json", Issuer: srv.URL, Audience: "api"})
	if err != nil {
		b.Fatal(err)
	}
	// Distinct tokens (a token verified once is remembered): as many as the loop may need, the
	// same claims but for the iat, which makes each token new.
	const distinct = 2048
	toks := make([]string, distinct)
	for i := range toks {
		tok, err := prov.Mint(idp.Claims{Subject: uuid.NewString(), Audience: []string{"api"}, IssuedAt: time.Now().Add(-time.Duration(i) * time.Second)})
		if err != nil {
			b.Fatal(err)
		}
		toks[i] = "Bearer " + tok
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h := toks[0]
		if !again {
			h = toks[i%distinct]
			i++
		}
		if _, err := v.Verify(context.Background(), h); err != nil {
			b.Fatal(err)
		}
	}
	if !again && i > distinct {
		b.Logf("%d of %d verifications were of remembered tokens (the loop ran past the %d distinct ones)", i-distinct, i, distinct)
	}
}
