package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
)

// maxJWKSBytes bounds a fetched JWK Set (a provider's is a few KiB).
const maxJWKSBytes = 1 << 20

// keySet is the provider's JWK Set, cached in memory: fetched at start, every RefreshInterval,
// and when a token names a kid it lacks (a key rotation), at most once per MinRefreshInterval.
// Tokens that arrive with a new kid while its fetch is under way wait for that one fetch (a
// crowd after a rotation costs the provider one request); a token with an unknown kid during
// the pause after a fetch is refused at once, so made-up kids cannot make this service hammer
// the provider or hold requests.
//
// jwkset fetches and parses the set (NewStorageFromHTTP); this type only decides when, and keeps
// the last good set when a fetch fails.
type keySet struct {
	jwkset.Storage // the keys of the last good fetch (a memory storage)
	cfg            Config
	client         *http.Client

	mu       sync.Mutex
	last     time.Time     // start of the last fetch, good or not
	inflight chan struct{} // closed when the fetch under way ends; nil when none
	fetches  int           // fetches started (tests)
	digest   [sha256.Size]byte

	// gen changes whenever the keys do (not on a fetch that brings the same set): tokens
	// verified against another generation are verified again (cache.go).
	gen atomic.Uint64
}

func newKeySet(cfg Config) *keySet {
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	// The set is read whole by a JSON decoder: cap what a broken or hostile endpoint can make
	// this process read.
	limited := *client
	base := limited.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	limited.Transport = limitBody{base}
	return &keySet{Storage: jwkset.NewMemoryStorage(), cfg: cfg, client: &limited}
}

// start fetches the set once, then every RefreshInterval until ctx ends.
func (k *keySet) start(ctx context.Context) {
	k.refresh(ctx, false)
	go func() {
		t := time.NewTicker(k.cfg.RefreshInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				k.refresh(ctx, false)
			}
		}
	}()
}

// KeyRead is the key of kid, fetching the set again when it lacks kid and the pause since the
// last fetch has passed (or joining the fetch under way).
func (k *keySet) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	jwk, err := k.Storage.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwk, err
	}
	// Read again whether or not this call fetched: a fetch that ended between the read above
	// and now (within the pause, so this call makes none) may have brought kid.
	k.refresh(ctx, true)
	return k.Storage.KeyRead(ctx, kid)
}

// refresh fetches the set and waits for the fetch (or for ctx). onMiss: only when no fetch
// started within MinRefreshInterval; it reports whether a fetch was made or joined.
func (k *keySet) refresh(ctx context.Context, onMiss bool) bool {
	k.mu.Lock()
	done := k.inflight
	if done == nil {
		if onMiss && time.Since(k.last) < k.cfg.MinRefreshInterval {
			k.mu.Unlock()
			return false
		}
		done = make(chan struct{})
		k.inflight, k.last = done, time.Now()
		k.fetches++
		// The fetch belongs to no request: one that goes away does not cancel it for the
		// others waiting on it.
		go k.fetch(context.WithoutCancel(ctx), done)
	}
	k.mu.Unlock()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

func (k *keySet) fetch(ctx context.Context, done chan struct{}) {
	defer func() {
		k.mu.Lock()
		k.inflight = nil
		k.mu.Unlock()
		close(done)
	}()
	// Without RefreshInterval, NewStorageFromHTTP fetches and parses the set once, now, and
	// fails when the fetch does.
	s, err := jwkset.NewStorageFromHTTP(k.cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client: k.client, Ctx: ctx, HTTPTimeout: k.client.Timeout,
	})
	var keys []jwkset.JWK
	if err == nil {
		keys, err = s.KeyReadAll(ctx)
	}
	if err == nil && len(keys) == 0 {
		err = errors.New("the JWK Set has no usable key")
	}
	if err != nil {
		// Keep the keys we have: a provider's hiccup must not refuse every user.
		k.cfg.Log.Error("fetching the identity provider's JWK Set; keeping the keys fetched before",
			"url", k.cfg.JWKSURL, "err", err)
		return
	}
	if err := k.Storage.KeyReplaceAll(ctx, keys); err != nil {
		k.cfg.Log.Error("storing the JWK Set", "err", err)
		return
	}
	kids := make([]string, len(keys))
	for i, j := range keys {
		kids[i] = j.Marshal().KID
	}
	if d := digestOf(keys); d != k.digest {
		k.digest = d // only fetch writes it, one fetch at a time
		k.gen.Add(1)
	}
	k.cfg.Log.Debug("JWK Set fetched", "url", k.cfg.JWKSURL, "kids", kids)
}

// digestOf identifies a set of keys whatever their order: the SHA-256 of their sorted JSON.
func digestOf(keys []jwkset.JWK) [sha256.Size]byte {
	docs := make([]string, 0, len(keys))
	for _, j := range keys {
		b, err := json.Marshal(j.Marshal())
		if err != nil { // cannot happen for a key jwkset parsed; count it as a change
			b = []byte(time.Now().String())
		}
		docs = append(docs, string(b))
	}
	slices.Sort(docs)
	return sha256.Sum256([]byte(strings.Join(docs, "\n")))
}

// generation is the current keys' generation.
func (k *keySet) generation() uint64 { return k.gen.Load() }

// Fetches is how many times the set was fetched (tests).
func (k *keySet) Fetches() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetches
}

// limitBody refuses a response body over maxJWKSBytes.
type limitBody struct{ base http.RoundTripper }

func (l limitBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxJWKSBytes {
		resp.Body.Close()
		return nil, fmt.Errorf("JWK Set of %d bytes: over %d", resp.ContentLength, maxJWKSBytes)
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, maxJWKSBytes)
	return resp, nil
}
