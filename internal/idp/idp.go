// Package idp is a local identity provider for tests, load tests and the bench: signing keys
// generated or loaded here, their JWK Set served over HTTP, and access tokens minted for any
// subject. A couponsvc in identity mode trusts it when AUTH_JWKS_URL points at its JWK Set and
// AUTH_ISSUER is its issuer. It signs with golang-jwt and publishes keys with jwkset, the
// libraries couponsvc verifies with.
package idp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Key is a signing key with its key id and algorithm.
type Key struct {
	ID     string
	Method jwt.SigningMethod
	Signer crypto.Signer
}

// NewKey generates a key for alg: RS256 (RSA 2048), ES256 (P-256) or EdDSA (Ed25519).
func NewKey(alg string) (*Key, error) {
	var s crypto.Signer
	var err error
	switch alg {
	case "RS256":
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, s, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("idp: unsupported algorithm %q (want RS256, ES256 or EdDSA)", alg)
	}
	if err != nil {
		return nil, err
	}
	return keyOf(s)
}

// keyOf makes a Key of a private key; its id is derived from the public key, so the same key
// file always has the same kid.
func keyOf(s crypto.Signer) (*Key, error) {
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	k := &Key{ID: base64.RawURLEncoding.EncodeToString(sum[:12]), Signer: s}
	switch s.(type) {
	case *rsa.PrivateKey:
		k.Method = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		k.Method = jwt.SigningMethodES256
	case ed25519.PrivateKey:
		k.Method = jwt.SigningMethodEdDSA
	default:
		return nil, fmt.Errorf("idp: unsupported key type %T", s)
	}
	return k, nil
}

// LoadOrCreateKey reads a PKCS #8 PEM private key from path, or generates an RS256 key and
// writes it there (mode 0600) when the file does not exist: the same file keeps the same JWK Set
// across runs, so a deployment configured to trust it keeps trusting it.
func LoadOrCreateKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := NewKey("RS256")
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return k, nil
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("idp: %s: want a PEM PRIVATE KEY (PKCS #8)", path)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("idp: %s: %w", path, err)
	}
	s, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("idp: %s: %T cannot sign", path, priv)
	}
	return keyOf(s)
}

// Provider signs tokens with its current key and publishes its keys' JWK Set.
type Provider struct {
	Issuer string

	mu        sync.Mutex
	current   *Key
	published []*Key
	jwks      []byte
	served    int // JWK Set requests answered
}

// New returns a provider named issuer that signs with key and publishes it.
func New(issuer string, key *Key) (*Provider, error) {
	p := &Provider{Issuer: issuer}
	if err := p.Rotate(key, false); err != nil {
		return nil, err
	}
	return p, nil
}

// Rotate makes key the signing key and publishes it; keepOld keeps the previous keys in the JWK
// Set (tokens they signed stay valid), otherwise they are withdrawn.
func (p *Provider) Rotate(key *Key, keepOld bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := []*Key{key}
	if keepOld {
		keys = append(slices.Clone(p.published), key)
	}
	jwks, err := jwkSet(keys)
	if err != nil {
		return err
	}
	p.current, p.published, p.jwks = key, keys, jwks
	return nil
}

// Publish adds key to the JWK Set without signing with it (a provider announcing its next key).
func (p *Provider) Publish(key *Key) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := append(slices.Clone(p.published), key)
	jwks, err := jwkSet(keys)
	if err != nil {
		return err
	}
	p.published, p.jwks = keys, jwks
	return nil
}

func jwkSet(keys []*Key) ([]byte, error) {
	var set jwkset.JWKSMarshal
	for _, k := range keys {
		j, err := jwkset.NewJWKFromKey(k.Signer.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			KID: k.ID, ALG: jwkset.ALG(k.Method.Alg()), USE: jwkset.UseSig,
		}})
		if err != nil {
			return nil, fmt.Errorf("idp: JWK of %s: %w", k.ID, err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	return json.Marshal(set)
}

// Key is the current signing key.
func (p *Provider) Key() *Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}

// Served is how many JWK Set requests were answered.
func (p *Provider) Served() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served
}

// ServeHTTP answers GET /jwks.json with the JWK Set, and /.well-known/openid-configuration
// with the issuer and where its keys are (enough for a tester to see what to configure).
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/jwks.json":
		p.mu.Lock()
		b := p.jwks
		p.served++
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "max-age=300")
		w.Write(b)
	case "/.well-known/openid-configuration":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": p.Issuer, "jwks_uri": p.Issuer + "/jwks.json",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256", "EdDSA"},
		})
	default:
		http.NotFound(w, r)
	}
}

// Claims are what Mint writes into a token besides iss (the provider's).
type Claims struct {
	Subject   string
	Audience  []string
	Scope     string        // space-separated scopes; empty: no scope claim
	Lifetime  time.Duration // exp = IssuedAt + Lifetime; default 1 hour
	IssuedAt  time.Time     // default now
	NotBefore time.Time     // zero: no nbf claim
}

// Mint returns a token with c, signed by the current key.
func (p *Provider) Mint(c Claims) (string, error) { return p.MintWith(p.Key(), c) }

// MintWith returns a token with c signed by key (published or not).
func (p *Provider) MintWith(key *Key, c Claims) (string, error) {
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.Lifetime == 0 {
		c.Lifetime = time.Hour
	}
	type claims struct {
		jwt.RegisteredClaims
		Scope string `json:"scope,omitempty"`
	}
	cl := claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: p.Issuer, Subject: c.Subject, Audience: c.Audience,
		IssuedAt: jwt.NewNumericDate(c.IssuedAt), ExpiresAt: jwt.NewNumericDate(c.IssuedAt.Add(c.Lifetime)),
	}, Scope: c.Scope}
	if !c.NotBefore.IsZero() {
		cl.NotBefore = jwt.NewNumericDate(c.NotBefore)
	}
	t := jwt.NewWithClaims(key.Method, cl)
	t.Header["kid"] = key.ID
	return t.SignedString(key.Signer)
}

// MintAll mints one token per subject with c (its Subject ignored), on every CPU: RSA signing
// takes about a millisecond, and load tests want tens of thousands of tokens.
func (p *Provider) MintAll(subjects []string, c Claims) ([]string, error) {
	key := p.Key()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now() // one iat for all: they were minted for one run
	}
	out := make([]string, len(subjects))
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(subjects) || firstErr.Load() != nil {
					return
				}
				cc := c
				cc.Subject = subjects[i]
				tok, err := p.MintWith(key, cc)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				out[i] = tok
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return nil, err
	}
	return out, nil
}
