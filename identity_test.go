package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"couponsvc/internal/auth"
	"couponsvc/internal/idp"
	"couponsvc/internal/testenv"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

const testAudience = "couponsvc-test"

// identityStack is an instance in identity mode trusting a local identity provider whose JWK
// Set is served by the test.
type identityStack struct {
	pg    *testenv.Postgres
	st    *stack
	in    *instance
	idp   *idp.Provider
	jwks  *httptest.Server
	first *idp.Key
}

func newIdentityStack(t *testing.T) *identityStack {
	t.Helper()
	key, err := idp.NewKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	s := &identityStack{first: key}
	var handler http.Handler = http.NotFoundHandler()
	s.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(s.jwks.Close)
	if s.idp, err = idp.New(s.jwks.URL, key); err != nil {
		t.Fatal(err)
	}
	handler = s.idp
	// A PostgreSQL of its own: the test stops it to show that a refused token needs none.
	s.pg = testenv.NewPostgres(t)
	s.st = &stack{dsn: s.pg.CreateDatabase(t), redis: testenv.NewRedisNodes(t, 1)}
	s.in = startInstance(t, s.st.env(map[string]string{
		"AUTH_JWKS_URL":   s.jwks.URL + "/jwks.json",
		"AUTH_ISSUER":     s.jwks.URL,
		"AUTH_AUDIENCE":   testAudience,
		"AUTH_ALGORITHMS": "RS256,ES256",
		"LOG_LEVEL":       "info",
	}))
	return s
}

// token mints a token of the provider's current key for sub, valid now, for this API.
func (s *identityStack) token(t testing.TB, sub string) string {
	t.Helper()
	tok, err := s.idp.Mint(idp.Claims{Subject: sub, Audience: []string{testAudience}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sendAuth makes one request with Authorization: Bearer token (none when token is empty).
func sendAuth(t testing.TB, method, url, token, body string) answer {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	return sendAs(t, auth, method, url, body)
}

func userBody(id uuid.UUID) string { return `{"userId":"` + id.String() + `"}` }

// walletRows is the number of wallet rows in the database (every coupon, every user).
func walletRows(t *testing.T, dsn string) int {
	t.Helper()
	var n int
	if err := db(t, dsn).QueryRow(context.Background(), `SELECT count(*) FROM coupon_wallet`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestIdentityMode walks identity mode with real tokens: a local identity provider whose JWK Set
// the test serves (keys generated here), the user taken from the token, the issue body's userId
// optional and checked, /users/me/coupons, another user's wallet refused, redemption by the
// owner or by an order service's scoped token, every bad token refused 401 with nothing written
// (also with PostgreSQL stopped and Redis frozen: a refusal needs neither), and a key rotated
// mid-test, picked up by a rate-limited refresh of the JWK Set.
func TestIdentityMode(t *testing.T) {
	s := newIdentityStack(t)
	in := s.in
	issueURL := in.base + "/api/v1/coupons/A0001/issue"
	if logs := in.logs.String(); !strings.Contains(logs, "identity mode: bearer tokens verified") || strings.Contains(logs, "NOT verified") {
		t.Errorf("identity mode start logs:\n%s", logs)
	}

	// A UUID subject is the user as it is; the body may be omitted, or name the same user.
	alice := uuid.New()
	aliceTok := s.token(t, alice.String())
	a := sendAuth(t, "POST", issueURL, aliceTok, "")
	if a.status != 201 || !strings.Contains(string(a.body), `"userId":"`+alice.String()+`"`) {
		t.Fatalf("issue with a valid token and no body: %d %s", a.status, a.body)
	}
	aliceWallet := walletID(t, a)
	if a := sendAuth(t, "POST", issueURL, aliceTok, userBody(alice)); a.status != 409 || a.errorCode() != "ALREADY_ISSUED" {
		t.Errorf("retry naming the token's user: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "POST", issueURL, aliceTok, `{}`); a.status != 409 {
		t.Errorf("retry with {}: %d %s", a.status, a.body)
	}
	// A userId that is not the token's user: 403, and nothing for either of them.
	victim := uuid.New()
	if a := sendAuth(t, "POST", in.base+"/api/v1/coupons/B0001/issue", aliceTok, userBody(victim)); a.status != 403 || a.errorCode() != "FORBIDDEN" {
		t.Errorf("issue for another user: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "POST", issueURL, aliceTok, `{"userId":"alice"}`); a.status != 400 || a.errorCode() != "INVALID_REQUEST" {
		t.Errorf("malformed userId with a valid token: %d %s", a.status, a.body)
	}

	// Any other subject maps to the version 5 UUID of the subject in the issuer's namespace.
	bobSub := "auth0|65f0c0ffee"
	bob := uuid.NewSHA1(uuid.NewSHA1(uuid.NameSpaceURL, []byte(s.jwks.URL)), []byte(bobSub))
	if got := auth.UserID(s.jwks.URL, bobSub); got != bob {
		t.Fatalf("auth.UserID = %s, want the documented %s", got, bob)
	}
	bobTok := s.token(t, bobSub)
	a = sendAuth(t, "POST", issueURL, bobTok, "")
	if a.status != 201 || !strings.Contains(string(a.body), `"userId":"`+bob.String()+`"`) {
		t.Fatalf("issue to a non-UUID subject: %d %s (want user %s)", a.status, a.body, bob)
	}
	bobWallet := walletID(t, a)
	if a := sendAuth(t, "POST", issueURL, s.token(t, bobSub), userBody(bob)); a.status != 409 {
		t.Errorf("the same subject in a new token is the same user: %d %s", a.status, a.body)
	}

	// Wallets: the caller's own; another's is 403.
	if a := sendAuth(t, "GET", in.base+"/api/v1/users/me/coupons", aliceTok, ""); a.status != 200 ||
		!strings.Contains(string(a.body), aliceWallet.String()) || strings.Contains(string(a.body), bobWallet.String()) {
		t.Errorf("me/coupons: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "GET", in.base+"/api/v1/users/"+alice.String()+"/coupons?status=usable", aliceTok, ""); a.status != 200 ||
		!strings.Contains(string(a.body), aliceWallet.String()) {
		t.Errorf("own wallet by id: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "GET", in.base+"/api/v1/users/"+alice.String()+"/coupons", bobTok, ""); a.status != 403 || a.errorCode() != "FORBIDDEN" {
		t.Errorf("another user's wallet: %d %s", a.status, a.body)
	}
	// Public reads need no token.
	if a := do(t, "GET", in.base+"/api/v1/coupons/A0001", ""); a.status != 200 || !strings.Contains(string(a.body), `"issuedQuantity":2`) {
		t.Errorf("coupon read without a token: %d %s", a.status, a.body)
	}

	// Redemption: not by another user, by the owner (the body's userId may be omitted), and by
	// an order service whose token carries the redeem scope, for the buyer it names.
	redeemURL := func(w uuid.UUID) string { return in.base + "/api/v1/wallet/" + w.String() + "/redeem" }
	order := func(id string, amount int) string { return fmt.Sprintf(`{"orderId":%q,"orderAmount":%d}`, id, amount) }
	if a := sendAuth(t, "POST", redeemURL(aliceWallet), bobTok, order("ORD-B1", 20000)); a.status != 403 || a.errorCode() != "NOT_OWNER" {
		t.Errorf("redeem another's entry: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "POST", redeemURL(aliceWallet), bobTok, `{"userId":"`+alice.String()+`","orderId":"ORD-B2","orderAmount":20000}`); a.status != 403 || a.errorCode() != "FORBIDDEN" {
		t.Errorf("redeem naming another user without the scope: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "POST", redeemURL(aliceWallet), aliceTok, order("ORD-A1", 25000)); a.status != 200 || !strings.Contains(string(a.body), `"buyerPays":15000`) {
		t.Errorf("owner redeems: %d %s", a.status, a.body)
	}
	svcTok, err := s.idp.Mint(idp.Claims{Subject: "order-service", Audience: []string{testAudience}, Scope: "openid " + auth.DefaultRedeemScope})
	if err != nil {
		t.Fatal(err)
	}
	if a := sendAuth(t, "POST", redeemURL(bobWallet), svcTok, order("ORD-S1", 30000)); a.status != 400 || a.errorCode() != "INVALID_REQUEST" {
		t.Errorf("order service without the buyer: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "POST", redeemURL(bobWallet), svcTok, `{"userId":"`+alice.String()+`","orderId":"ORD-S1","orderAmount":30000}`); a.status != 403 || a.errorCode() != "NOT_OWNER" {
		t.Errorf("order service naming the wrong buyer: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "POST", redeemURL(bobWallet), svcTok, `{"userId":"`+bob.String()+`","orderId":"ORD-S1","orderAmount":30000}`); a.status != 200 ||
		!strings.Contains(string(a.body), `"orderAmount":30000`) {
		t.Errorf("order service redeems for the buyer: %d %s", a.status, a.body)
	}

	// Every bad token: 401 UNAUTHORIZED with a challenge, nothing written.
	checkRefusals(t, s, "live")
	// The same with PostgreSQL stopped and the Redis node frozen: a refusal touches neither.
	s.pg.Stop(t)
	s.st.redis[0].Pause(t)
	start := time.Now()
	checkRefusals(t, s, "PostgreSQL stopped, Redis frozen")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the refusals took %v with the stores down: they must not wait for them", took)
	}
	if a := sendAuth(t, "POST", issueURL, s.token(t, uuid.NewString()), ""); a.status != 503 {
		t.Errorf("a valid token with the stores down: %d %s (want 503: the stores are needed past the token)", a.status, a.body)
	}
	s.st.redis[0].Resume(t)
	s.pg.Start(t)
	testenv.WaitFor(t, 15*time.Second, "a valid token is served once the stores are back", func() bool {
		return sendAuth(t, "GET", in.base+"/api/v1/users/me/coupons", aliceTok, "").status == 200
	})
	checkInvariants(t, s.st.dsn, "A0001", 2, nil)
	checkInvariants(t, s.st.dsn, "B0001", 0, nil)
	if n := walletRows(t, s.st.dsn); n != 2 {
		t.Errorf("%d wallet rows, want 2 (alice's and bob's)", n)
	}
	m := string(do(t, "GET", in.base+"/metrics", "").body)
	for _, want := range []string{`couponsvc_auth_failures_total{reason="expired"}`, `couponsvc_auth_failures_total{reason="algorithm"}`,
		`couponsvc_http_requests_total{method="POST",route="/api/v1/coupons/:code/issue",status="401"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	checkRotation(t, s, aliceTok)
}

// refusal is a request that identity mode must refuse 401.
type refusal struct {
	name, authorization string
	noHeader            bool
	reason              string // the auth failure reason counted in /metrics
}

func refusals(t *testing.T, s *identityStack) []refusal {
	t.Helper()
	now := time.Now()
	mint := func(c idp.Claims) string {
		if c.Subject == "" {
			c.Subject = uuid.NewString()
		}
		if c.Audience == nil {
			c.Audience = []string{testAudience}
		}
		tok, err := s.idp.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	b64 := func(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }
	payload := func(extra string) string {
		return b64(fmt.Sprintf(`{"iss":%q,"aud":%q,"sub":%q,"iat":%d,"exp":%d%s}`,
			s.jwks.URL, testAudience, uuid.NewString(), now.Unix(), now.Add(time.Hour).Unix(), extra))
	}
	key := s.idp.Key()
	valid := mint(idp.Claims{})
	parts := strings.Split(valid, ".")

	// HMAC confusion: HS256 with the published RSA public key as the secret, and its kid.
	der, err := x509.MarshalPKIXPublicKey(key.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	hsInput := b64(`{"alg":"HS256","typ":"JWT","kid":"`+key.ID+`"}`) + "." + payload("")
	mac := hmac.New(sha256.New, der)
	mac.Write([]byte(hsInput))
	hs256 := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	unpublished, err := idp.NewKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	unknownKey, err := s.idp.MintWith(unpublished, idp.Claims{Subject: uuid.NewString(), Audience: []string{testAudience}})
	if err != nil {
		t.Fatal(err)
	}
	ecUnpublished, err := idp.NewKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	ecUnknown, err := s.idp.MintWith(ecUnpublished, idp.Claims{Subject: uuid.NewString(), Audience: []string{testAudience}})
	if err != nil {
		t.Fatal(err)
	}
	// The same claims, signed, but the payload swapped for another user's.
	tampered := parts[0] + "." + payload("") + "." + parts[2]
	hugeKid := b64(`{"alg":"RS256","typ":"JWT","kid":"`+strings.Repeat("k", 6000)+`"}`) + "." + parts[1] + "." + parts[2]
	bearer := func(tok string) string { return "Bearer " + tok }
	signed := func(c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(key.Method, c)
		tok.Header["kid"] = key.ID
		str, err := tok.SignedString(key.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return str
	}

	return []refusal{
		{name: "no Authorization header", noHeader: true, reason: auth.ReasonMissing},
		{name: "Basic credentials", authorization: "Basic YWxpY2U6c2VjcmV0", reason: auth.ReasonMissing},
		{name: "Bearer without a token", authorization: "Bearer ", reason: auth.ReasonMissing},
		{name: "expired", authorization: bearer(mint(idp.Claims{IssuedAt: now.Add(-2 * time.Hour)})), reason: auth.ReasonExpired},
		{name: "not yet valid (nbf in 10 min)", authorization: bearer(mint(idp.Claims{NotBefore: now.Add(10 * time.Minute)})), reason: auth.ReasonNotYetValid},
		{name: "issued in 10 min", authorization: bearer(mint(idp.Claims{IssuedAt: now.Add(10 * time.Minute)})), reason: auth.ReasonNotYetValid},
		{name: "for another audience", authorization: bearer(mint(idp.Claims{Audience: []string{"another-api"}})), reason: auth.ReasonAudience},
		{name: "without an audience", authorization: bearer(mint(idp.Claims{Audience: []string{}})), reason: auth.ReasonClaims},
		{name: "without exp", authorization: bearer(signed(jwt.MapClaims{"iss": s.jwks.URL, "aud": testAudience, "sub": uuid.NewString(), "iat": now.Unix()})), reason: auth.ReasonClaims},
		{name: "without sub", authorization: bearer(signed(jwt.MapClaims{"iss": s.jwks.URL, "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})), reason: auth.ReasonClaims},
		{name: "from another issuer", authorization: bearer(func() string {
			other, err := idp.New("https://evil.example", key)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := other.Mint(idp.Claims{Subject: uuid.NewString(), Audience: []string{testAudience}})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}()), reason: auth.ReasonIssuer},
		{name: "signed by an unknown RSA key", authorization: bearer(unknownKey), reason: auth.ReasonUnknownKey},
		{name: "signed by an unknown EC key", authorization: bearer(ecUnknown), reason: auth.ReasonUnknownKey},
		{name: "alg none", authorization: bearer(b64(`{"alg":"none","typ":"JWT"}`) + "." + payload("") + "."), reason: auth.ReasonAlgorithm},
		{name: "alg none with the key's kid and its signature", authorization: bearer(b64(`{"alg":"none","kid":"`+key.ID+`"}`) + "." + parts[1] + "." + parts[2]), reason: auth.ReasonAlgorithm},
		{name: "HS256 keyed with the published public key", authorization: bearer(hs256), reason: auth.ReasonAlgorithm},
		{name: "an algorithm nobody knows", authorization: bearer(b64(`{"alg":"XX999","kid":"`+key.ID+`"}`) + "." + parts[1] + "." + parts[2]), reason: auth.ReasonAlgorithm},
		{name: "tampered payload", authorization: bearer(tampered), reason: auth.ReasonSignature},
		{name: "huge header (6 KB kid)", authorization: bearer(hugeKid), reason: auth.ReasonUnknownKey},
		{name: "token over 8 KiB", authorization: bearer(b64(`{"alg":"RS256","kid":"`+strings.Repeat("k", 40<<10)+`"}`) + "." + parts[1] + "." + parts[2]), reason: auth.ReasonMalformed},
		{name: "two parts", authorization: bearer(parts[0] + "." + parts[1]), reason: auth.ReasonMalformed},
		{name: "four parts", authorization: bearer(valid + ".x"), reason: auth.ReasonMalformed},
		{name: "header not base64url", authorization: bearer("e30=." + parts[1] + "." + parts[2]), reason: auth.ReasonMalformed},
		{name: "header not JSON", authorization: bearer(b64("not json") + "." + parts[1] + "." + parts[2]), reason: auth.ReasonMalformed},
		{name: "header a JSON array", authorization: bearer(b64(`["RS256"]`) + "." + parts[1] + "." + parts[2]), reason: auth.ReasonMalformed},
		{name: "payload not JSON", authorization: bearer(parts[0] + "." + b64("{") + "." + parts[2]), reason: auth.ReasonMalformed},
		{name: "characters outside base64url", authorization: "Bearer eyJ+/==.e30.c2ln", reason: auth.ReasonMalformed},
		{name: "a space inside the token", authorization: "Bearer " + parts[0] + ". " + parts[1] + "." + parts[2], reason: auth.ReasonMalformed},
	}
}

// checkRefusals sends every refusal to every user route: each is 401 UNAUTHORIZED with
// WWW-Authenticate and the API's error body, and no wallet row appears.
func checkRefusals(t *testing.T, s *identityStack, when string) {
	t.Helper()
	in := s.in
	before := -1
	if when == "live" {
		before = walletRows(t, s.st.dsn)
	}
	victim := uuid.New()
	routes := []struct{ method, path, body string }{
		{"POST", "/api/v1/coupons/A0001/issue", userBody(victim)},
		{"POST", "/api/v1/coupons/C0001/issue", ""},
		{"GET", "/api/v1/users/me/coupons", ""},
		{"GET", "/api/v1/users/" + victim.String() + "/coupons", ""},
		{"POST", "/api/v1/wallet/" + uuid.NewString() + "/redeem", `{"userId":"` + victim.String() + `","orderId":"X","orderAmount":1}`},
	}
	for _, r := range refusals(t, s) {
		for _, rt := range routes {
			header := r.authorization
			if r.noHeader {
				header = ""
			}
			a := sendAs(t, header, rt.method, in.base+rt.path, rt.body)
			what := fmt.Sprintf("%s: %s: %s %s", when, r.name, rt.method, rt.path)
			if a.status != 401 || a.errorCode() != "UNAUTHORIZED" {
				t.Errorf("%s: %d %s, want 401 UNAUTHORIZED", what, a.status, a.body)
				continue
			}
			var body struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(a.body, &body); err != nil || body.Error.Message == "" {
				t.Errorf("%s: error body %q", what, a.body)
			}
			challenge := a.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, `Bearer realm="couponsvc"`) {
				t.Errorf("%s: WWW-Authenticate %q", what, challenge)
			}
			if wantErr := r.reason != auth.ReasonMissing; wantErr != strings.Contains(challenge, `error="invalid_token"`) {
				t.Errorf("%s: WWW-Authenticate %q (invalid_token expected: %v)", what, challenge, wantErr)
			}
		}
	}
	if before >= 0 {
		if after := walletRows(t, s.st.dsn); after != before {
			t.Errorf("%s: %d wallet rows after the refusals, %d before", when, after, before)
		}
	}
	// Each refusal is counted under its reason (the reasons say what the tests claim).
	m := string(do(t, "GET", in.base+"/metrics", "").body)
	for _, r := range refusals(t, s) {
		if !strings.Contains(m, `couponsvc_auth_failures_total{reason="`+r.reason+`"}`) {
			t.Errorf("/metrics lacks auth failures of reason %s (%s)", r.reason, r.name)
		}
	}
	if strings.Contains(m, `couponsvc_issue_total{coupon="C0001"`) {
		t.Errorf("%s: a refused request reached the issue path (couponsvc_issue_total has C0001)", when)
	}
}

// checkRotation: the provider switches to a new key (an EC key, withdrawing the RSA key) without
// announcing it. Tokens of the new key are refused until the service fetches the JWK Set again,
// which a token with an unknown kid causes at most once per 10 s; then they are accepted, and
// the withdrawn key's tokens are refused, remembered (an earlier token, verified and used
// before: old) or not. Tokens with made-up kids cost the provider no more than that one fetch
// per 10 s.
func checkRotation(t *testing.T, s *identityStack, old string) {
	t.Helper()
	in := s.in
	next, err := idp.NewKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.idp.Rotate(next, false); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	fetchesBefore := s.idp.Served()
	carol := uuid.New()
	carolTok := s.token(t, carol.String())
	var refused int
	testenv.WaitFor(t, 25*time.Second, "a token of the rotated key is accepted", func() bool {
		a := sendAuth(t, "POST", in.base+"/api/v1/coupons/C0001/issue", carolTok, "")
		if a.status == 401 {
			refused++
			time.Sleep(200 * time.Millisecond)
			return false
		}
		if a.status != 201 {
			t.Fatalf("token of the rotated key: %d %s", a.status, a.body)
		}
		return true
	})
	took := time.Since(rotated)
	t.Logf("rotated key accepted after %v (%d refusals before the JWK Set was fetched again)", took.Round(time.Millisecond), refused)
	if took > 12*time.Second {
		t.Errorf("the rotated key took %v to be accepted: the refresh on an unknown kid is due within 10 s", took)
	}
	if a := sendAuth(t, "POST", in.base+"/api/v1/coupons/C0001/issue", s.mintWith(t, s.first, uuid.NewString()), ""); a.status != 401 {
		t.Errorf("token of the withdrawn key: %d %s", a.status, a.body)
	}
	if a := sendAuth(t, "GET", in.base+"/api/v1/users/me/coupons", old, ""); a.status != 401 || !strings.Contains(a.header.Get("WWW-Authenticate"), "unknown key") {
		t.Errorf("a token of the withdrawn key verified before the rotation: %d %s %q", a.status, a.body, a.header.Get("WWW-Authenticate"))
	}
	// A burst of made-up kids right after a fetch: refused at once, no fetch.
	served := s.idp.Served()
	stranger, err := idp.NewKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if a := sendAuth(t, "GET", in.base+"/api/v1/users/me/coupons", s.mintWith(t, stranger, uuid.NewString()), ""); a.status != 401 {
			t.Fatalf("unknown key %d: %d %s", i, a.status, a.body)
		}
	}
	if n := s.idp.Served() - served; n > 1 {
		t.Errorf("50 tokens of an unknown key made %d JWK Set fetches, want at most 1 (one per 10 s)", n)
	}
	if n := s.idp.Served() - fetchesBefore; n > 3 {
		t.Errorf("%d JWK Set fetches since the rotation %v ago, want at most 3", n, time.Since(rotated).Round(time.Second))
	}
	if a := sendAuth(t, "GET", in.base+"/api/v1/users/me/coupons", carolTok, ""); a.status != 200 || !strings.Contains(string(a.body), `"couponCode":"C0001"`) {
		t.Errorf("carol's wallet: %d %s", a.status, a.body)
	}
}

func (s *identityStack) mintWith(t *testing.T, key *idp.Key, sub string) string {
	t.Helper()
	tok, err := s.idp.MintWith(key, idp.Claims{Subject: sub, Audience: []string{testAudience}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// authFailures is the instance's couponsvc_auth_failures_total summed over reasons: how many
// tokens it verified and refused.
func authFailures(t *testing.T, in *instance) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(string(do(t, "GET", in.base+"/metrics", "").body), "\n") {
		if strings.HasPrefix(line, "couponsvc_auth_failures_total{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			n += int(v)
		}
	}
	return n
}

// TestIdentityPublicAnswersBeforeVerification: in identity mode the answers to an issue request
// that do not depend on who asks (sold out, closed, not open) are given without verifying the
// token, so a sold-out coupon's crowd costs no signature checks, and they reveal nothing: a
// token that would fail gets the same answer whether or not the user it claims holds the
// coupon, while a verified holder still gets 409 on every retry. No token at all, or one of no
// JWT's shape, is still 401; an open coupon's requests are verified as before.
func TestIdentityPublicAnswersBeforeVerification(t *testing.T) {
	s := newIdentityStack(t)
	in := s.in
	forger, err := idp.NewKey("RS256") // a key the provider never published
	if err != nil {
		t.Fatal(err)
	}
	createCoupon(t, s.st.dsn, "SOLD1", 1)
	url := in.base + "/api/v1/coupons/SOLD1/issue"

	// Open, with stock: a forged token is verified and refused.
	holder, other := uuid.New(), uuid.New()
	f0 := authFailures(t, in)
	mustStatus(t, "forged token, stock left", sendAuth(t, "POST", url, s.mintWith(t, forger, holder.String()), ""), 401, "UNAUTHORIZED")
	if f := authFailures(t, in); f != f0+1 {
		t.Fatalf("auth failures %d -> %d: the forged token was not verified while stock is left", f0, f)
	}
	mustStatus(t, "holder", sendAuth(t, "POST", url, s.token(t, holder.String()), ""), 201, "")
	mustStatus(t, "valid token of a non-holder", sendAuth(t, "POST", url, s.token(t, other.String()), ""), 410, "SOLD_OUT")
	// Told sold out, the instance reads the final holder set within moments.
	testenv.WaitFor(t, 10*time.Second, "a forged token of a non-holder answered 410 unverified", func() bool {
		a := sendAuth(t, "POST", url, s.mintWith(t, forger, uuid.NewString()), "")
		return a.status == 410
	})

	f0 = authFailures(t, in)
	for i := range 20 {
		mustStatus(t, fmt.Sprintf("forged token of a non-holder %d", i), sendAuth(t, "POST", url, s.mintWith(t, forger, uuid.NewString()), ""), 410, "SOLD_OUT")
	}
	mustStatus(t, "valid token of a non-holder, again", sendAuth(t, "POST", url, s.token(t, other.String()), ""), 410, "SOLD_OUT")
	if f := authFailures(t, in); f != f0 {
		t.Errorf("auth failures %d -> %d: sold-out answers verified tokens", f0, f)
	}
	// The holder's forged token is verified (only a verified request may learn 409) and,
	// refused, answered like a non-holder's: 410, not 401.
	mustStatus(t, "forged token of the holder", sendAuth(t, "POST", url, s.mintWith(t, forger, holder.String()), ""), 410, "SOLD_OUT")
	if f := authFailures(t, in); f != f0+1 {
		t.Errorf("auth failures %d -> %d: the forged token claiming the holder was not verified", f0, f)
	}
	for range 3 {
		mustStatus(t, "the holder's retry", sendAuth(t, "POST", url, s.token(t, holder.String()), ""), 409, "ALREADY_ISSUED")
	}
	// No token, or none of a JWT's shape: 401 even on a sold-out coupon.
	mustStatus(t, "no token", sendAuth(t, "POST", url, "", ""), 401, "UNAUTHORIZED")
	mustStatus(t, "not a JWT", sendAuth(t, "POST", url, "not-a-jwt", ""), 401, "UNAUTHORIZED")

	// Closed and not yet open: answered without verification too.
	if _, err := db(t, s.st.dsn).Exec(context.Background(), `INSERT INTO coupon (id, code, name, discount_amount, total_quantity, opens_at, closes_at)
		VALUES ($1, 'LATE1', 'x', 100, 5, now() - interval '2 hours', now() - interval '1 hour'),
		       ($2, 'SOON1', 'x', 100, 5, now() + interval '1 hour', NULL)`, uuid.New(), uuid.New()); err != nil {
		t.Fatal(err)
	}
	for code, want := range map[string]string{"LATE1": "EVENT_CLOSED", "SOON1": "EVENT_NOT_OPEN"} {
		u := in.base + "/api/v1/coupons/" + code + "/issue"
		mustStatus(t, code+" with a valid token (the instance learns the coupon)", sendAuth(t, "POST", u, s.token(t, other.String()), ""), 403, want)
		f0 = authFailures(t, in)
		mustStatus(t, code+" with a forged token", sendAuth(t, "POST", u, s.mintWith(t, forger, holder.String()), ""), 403, want)
		if f := authFailures(t, in); f != f0 {
			t.Errorf("%s: auth failures %d -> %d: a closed coupon's answer verified the token", code, f0, f)
		}
	}
	checkInvariants(t, s.st.dsn, "SOLD1", 1, nil)
	if n := walletRows(t, s.st.dsn); n != 1 {
		t.Errorf("%d wallet rows, want 1", n)
	}
}
