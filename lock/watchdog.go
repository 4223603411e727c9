package lock

import (
	"context"
	"time"

	"github.com/go-redsync/redsync/v4"
)

// grant is one acquisition of a lock by an owner, shared by its reentrant holds.
type grant struct {
	owner string
	value string // the key's value in Redis: unique to this grant
	token int64  // fencing token
	fixed bool   // fixed lease: no renewal
	// rm is redsync's handle on the grant; it is not safe for concurrent use, so the watchdog
	// uses it while it runs and Unlock only after the watchdog has stopped.
	rm *redsync.Mutex

	// Guarded by Client.mu.
	count  int
	until  time.Time // validity: lease start + lease - elapsed - drift, moved by each renewal
	ending bool      // Unlock is releasing it
	ended  bool

	lost chan struct{} // closed when the grant ends
	stop chan struct{} // closed by Unlock to stop the watchdog
	done chan struct{} // closed when the watchdog has stopped
}

// end closes the grant's Lost channel; the caller holds Client.mu.
func (g *grant) end() {
	if !g.ended {
		g.ended = true
		close(g.lost)
	}
}

func (g *grant) validUntil(c *Client) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return g.until
}

// keepAlive is the grant's watchdog, kept apart from acquisition as etcd keeps a session's
// lease alive apart from its mutex. With the watchdog lease it renews every renew interval
// while the grant is held; a fixed lease is never renewed. Either way the grant is declared
// lost, and Lost closed, the moment it cannot be trusted any more: when a quorum of nodes
// denies holding our value, or when the validity passes without a successful renewal (nodes
// unreachable), or when the Client closes. It stops when Unlock closes g.stop; if the process
// dies, nothing renews and the lease frees the lock within one lease.
func (c *Client) keepAlive(st *state, g *grant) {
	defer c.wg.Done()
	defer close(g.done)
	var renew <-chan time.Time
	if !g.fixed {
		t := time.NewTicker(c.cfg.renewInterval)
		defer t.Stop()
		renew = t.C
	}
	expiry := time.NewTimer(time.Until(g.validUntil(c)))
	defer expiry.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-c.done:
			c.lose(st, g)
			return
		case <-expiry.C:
			if c.lose(st, g) {
				// Give back whatever is left of the key so others need not wait out its TTL;
				// the script deletes it only where it still holds our value.
				if _, err := g.rm.UnlockContext(context.Background()); classify(err).unreachable > 0 {
					c.sweep.add(st.name, g.value)
				}
			}
			return
		case <-renew:
			ok, err := g.rm.ExtendContext(context.Background())
			if ok {
				until := g.rm.Until()
				c.mu.Lock()
				g.until = until
				c.mu.Unlock()
				expiry.Reset(time.Until(until))
				continue
			}
			if c.deniedByQuorum(classify(err)) {
				c.lose(st, g)
				return
			}
			// Nodes did not answer: the grant may still be ours; try again at the next tick,
			// and the expiry timer ends it if no renewal succeeds in time.
		}
	}
}

// lose ends a grant that was not released by Unlock: the holder's Lost closes, its Unlock will
// return ErrLockLost, and the next local waiter may contend. It reports false when Unlock got
// there first.
func (c *Client) lose(st *state, g *grant) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.holder != g || g.ending {
		return false
	}
	st.holder = nil
	g.end()
	st.lost[g.owner] = struct{}{}
	st.promoteLocked()
	return true
}
