// Package seal authenticates what the instances of the service say to each other (the issue
// requests forwarded between them, the notices on the Redis buses) with an HMAC-SHA256 under a
// key they share (CLUSTER_KEY), so that nothing else in the cluster (another pod that can
// reach Redis or a pod's port) can make them answer wrongly.
package seal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// MinKeyLength is the shortest key accepted: 32 bytes, the HMAC's own size.
const MinKeyLength = 32

// Key is the shared key; a nil Key authenticates nothing (one instance, or a demo).
type Key []byte

// Enabled reports whether k authenticates.
func (k Key) Enabled() bool { return len(k) > 0 }

// Sum returns the hex MAC of parts (each length-prefixed, so that parts cannot be shifted into
// one another), or "-" when k is nil.
func (k Key) Sum(parts ...[]byte) string {
	if !k.Enabled() {
		return "-"
	}
	m := hmac.New(sha256.New, k)
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write(p)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether mac is the MAC of parts under k, in constant time; with a nil k,
// everything verifies.
func (k Key) Verify(mac string, parts ...[]byte) bool {
	if !k.Enabled() {
		return true
	}
	return hmac.Equal([]byte(mac), []byte(k.Sum(parts...)))
}
