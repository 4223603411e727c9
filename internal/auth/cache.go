package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// cacheEntries bounds the verified tokens remembered, per generation (two generations are
// kept): about 100 bytes each, so at most a few MiB.
const cacheEntries = 1 << 15

// verified remembers the tokens verified recently, by the SHA-256 of the whole token, so that a
// user's next request with the same token (a retry in a crowd, the wallet after the issue) costs
// a hash and a map lookup instead of an RSA verification (tens of microseconds). Only the exact
// bytes of a token that passed every check are remembered; an entry is used only until the
// token's exp (plus the clock skew) and only while the JWK Set is the one it was verified
// against: a key withdrawn or replaced makes every token verify again.
//
// Two generations bound the memory without per-entry bookkeeping: when the current map is full
// it becomes the previous one and the one before is dropped; a hit in the previous map moves the
// entry to the current one.
type verified struct {
	mu        sync.Mutex
	cur, prev map[[sha256.Size]byte]verifiedToken
	max       int
}

type verifiedToken struct {
	id      Identity
	expires time.Time // exp + clock skew: the token is refused from then on
	keys    uint64    // the JWK Set generation it was verified against
}

func newVerified(max int) *verified {
	return &verified{cur: make(map[[sha256.Size]byte]verifiedToken), max: max}
}

// get is the identity of the token with this sum, if it was verified against the JWK Set of
// generation keys and has not expired at now.
func (c *verified) get(sum [sha256.Size]byte, now time.Time, keys uint64) (Identity, bool) {
	c.mu.Lock()
	t, ok := c.cur[sum]
	if !ok {
		if t, ok = c.prev[sum]; ok {
			c.putLocked(sum, t)
		}
	}
	c.mu.Unlock()
	if !ok || t.keys != keys || !now.Before(t.expires) {
		return Identity{}, false
	}
	return t.id, true
}

func (c *verified) put(sum [sha256.Size]byte, t verifiedToken) {
	c.mu.Lock()
	c.putLocked(sum, t)
	c.mu.Unlock()
}

func (c *verified) putLocked(sum [sha256.Size]byte, t verifiedToken) {
	if len(c.cur) >= c.max {
		c.prev, c.cur = c.cur, make(map[[sha256.Size]byte]verifiedToken, c.max)
	}
	c.cur[sum] = t
}

// len is the number of entries kept (tests).
func (c *verified) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}
