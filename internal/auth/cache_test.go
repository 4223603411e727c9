package auth

import (
	"context"
	"crypto/sha256"
	"net/http/httptest"
	"testing"
	"time"

	"couponsvc/internal/idp"

	"github.com/google/uuid"
)

// A token verified once is not verified again while it is valid and the keys are the same; it
// is refused once expired although remembered; a change of the JWK Set (a key withdrawn) makes
// it verify again, and fail.
func TestVerifiedTokens(t *testing.T) {
	key, err := idp.NewKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	p, err := idp.New("http://placeholder", key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	defer srv.Close()
	p.Issuer = srv.URL
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v, err := New(ctx, Config{JWKSURL: srv.URL + "/jwks.json", Issuer: srv.URL, Audience: "api", MinRefreshInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := p.Mint(idp.Claims{Subject: uuid.NewString(), Audience: []string{"api"}, Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := v.Verify(ctx, "Bearer "+tok); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if n := v.Verifications(); n != 1 {
		t.Errorf("5 requests with one token: %d full verifications, want 1", n)
	}
	// Expired: refused, although remembered.
	v.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, err := v.Verify(ctx, "Bearer "+tok); reasonOf(err) != ReasonExpired {
		t.Errorf("expired token found among the verified ones: %v", err)
	}
	v.now = time.Now
	// The provider withdraws the key: once the set is fetched again, the token is refused.
	next, err := idp.NewKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Rotate(next, false); err != nil {
		t.Fatal(err)
	}
	gen := v.keys.generation()
	time.Sleep(2 * time.Millisecond)
	if _, err := v.Verify(ctx, "Bearer "+p.Key().ID+"."+"x.y"); err == nil { // an unknown kid makes it fetch
		t.Fatal("garbage accepted")
	}
	unknown, err := p.Mint(idp.Claims{Subject: uuid.NewString(), Audience: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, "Bearer "+unknown); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if v.keys.generation() == gen {
		t.Fatal("the JWK Set changed but its generation did not")
	}
	if _, err := v.Verify(ctx, "Bearer "+tok); reasonOf(err) != ReasonUnknownKey {
		t.Errorf("a remembered token of a withdrawn key: %v, want refused (unknown key)", err)
	}
	// The same set fetched again is the same generation.
	gen = v.keys.generation()
	v.keys.refresh(ctx, false)
	if v.keys.generation() != gen {
		t.Error("fetching the same JWK Set again changed the generation")
	}
}

func reasonOf(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Reason
	}
	if err == nil {
		return "accepted"
	}
	return err.Error()
}

// The remembered tokens are bounded: two generations of max entries.
func TestVerifiedBounded(t *testing.T) {
	c := newVerified(4)
	for i := range 50 {
		c.put(sha256.Sum256([]byte{byte(i)}), verifiedToken{expires: time.Now().Add(time.Hour)})
		if n := c.len(); n > 8 {
			t.Fatalf("%d entries after %d puts, want at most 8", n, i+1)
		}
	}
	// The latest are found; a hit in the previous generation survives the next rotation.
	if _, ok := c.get(sha256.Sum256([]byte{49}), time.Now(), 0); !ok {
		t.Error("the latest entry is gone")
	}
	if _, ok := c.get(sha256.Sum256([]byte{0}), time.Now(), 0); ok {
		t.Error("the first entry is still there")
	}
}
