package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"
)

// Mutex is a handle on one named lock of a Client. The holder is the owner carried in the
// context of each call (WithOwner).
type Mutex struct {
	c    *Client
	name string
}

// Name returns the lock's name.
func (m *Mutex) Name() string { return m.name }

// Lock waits until the context's owner holds the lock or ctx ends, like Redisson's
// lockInterruptibly(). The lease is the watchdog timeout, renewed while the lock is held. If the
// owner already holds the lock, its hold count goes up.
func (m *Mutex) Lock(ctx context.Context) error {
	return m.acquire(ctx, 0, false, 0)
}

// TryLock is Redisson's tryLock(wait, lease): it waits at most wait for the lock (0: one
// attempt; negative: until ctx ends, as Redisson's -1, which makes it lock(lease)). A lease of 0
// means the watchdog lease, renewed while held; a positive lease is fixed: no renewal, the lock
// frees itself when it runs out, Lost closes then and a later Unlock returns ErrLockLost. It
// returns ErrTimeout when the lock stays taken for the whole wait and ErrUnavailable, at once,
// when fewer than a quorum of nodes answer. Reentry keeps the current grant and its lease.
func (m *Mutex) TryLock(ctx context.Context, wait, lease time.Duration) error {
	return m.acquire(ctx, max(wait, 0), wait >= 0, max(lease, 0))
}

func (m *Mutex) acquire(ctx context.Context, wait time.Duration, bounded bool, lease time.Duration) error {
	owner, err := ownerOf(ctx)
	if err != nil {
		return err
	}
	c := m.c
	var deadline time.Time
	if bounded {
		deadline = time.Now().Add(wait)
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	st := c.stateLocked(m.name)
	if g := st.holder; g != nil && g.owner == owner && !g.ending {
		g.count++
		c.mu.Unlock()
		return nil
	}
	w := &waiter{owner: owner, turn: make(chan error, 1)}
	st.queue = append(st.queue, w)
	st.promoteLocked()
	c.mu.Unlock()

	// Wait for our turn in the local queue: only its head contends in Redis.
	var expired <-chan time.Time
	if bounded {
		t := time.NewTimer(wait)
		defer t.Stop()
		expired = t.C
	}
	select {
	case err = <-w.turn:
	default:
		if bounded && wait == 0 {
			err = ErrTimeout
			break
		}
		select {
		case err = <-w.turn:
		case <-expired:
			err = ErrTimeout
		case <-ctx.Done():
			err = ctxErr(ctx)
		case <-c.done:
			err = ErrClosed
		}
	}
	switch {
	case errors.Is(err, errJoined):
		return nil
	case err != nil:
		c.leave(st, w)
		return m.wrap("lock", err)
	}
	return m.wrap("lock", c.contend(ctx, st, w, lease, deadline))
}

func (m *Mutex) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w", op, m.name, err)
}

// ctxErr reports an ended context; a deadline counts as a timeout too.
func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
	return ctx.Err()
}

// leave removes a waiter that gives up and passes the turn on if it had it.
func (c *Client) leave(st *state, w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.removeLocked(w)
	st.promoteLocked()
	c.dropIfIdleLocked(st)
}

// contend is the head of the local queue trying to acquire the lock in Redis: attempt, and
// while the lock is taken elsewhere, sleep until a release is published or the lock's
// remaining lease (at most the fallback retry) has passed, as Redisson does.
func (c *Client) contend(ctx context.Context, st *state, w *waiter, lease time.Duration, deadline time.Time) error {
	for {
		select {
		case <-st.wake: // a release seen before this attempt needs no second attempt
		default:
		}
		g, res := c.attempt(ctx, st.name, w.owner, lease)
		switch res.outcome {
		case granted:
			return c.install(st, w, g)
		case unavailable:
			c.failQueue(st, w, ErrUnavailable)
			return ErrUnavailable
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			c.leave(st, w)
			return ErrTimeout
		}
		if c.ensureSubscribed(st) {
			continue // subscribed just now: a release may have slipped past, look again
		}
		delay := min(res.freeIn, c.cfg.fallbackRetry)
		if delay <= 0 {
			// The lock looked free yet we lost: a split vote between contenders, each of which
			// releases its minority. Back off a little, at random, as Redlock prescribes.
			delay = time.Duration(1 + rand.Int64N(int64(5*time.Millisecond)))
		}
		if !deadline.IsZero() {
			delay = min(delay, time.Until(deadline))
		}
		t := time.NewTimer(delay)
		select {
		case <-st.wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.leave(st, w)
			return ctxErr(ctx)
		case <-c.done:
			t.Stop()
			c.leave(st, w)
			return ErrClosed
		}
		t.Stop()
	}
}

type outcome int

const (
	granted outcome = iota
	taken
	unavailable
)

type attemptResult struct {
	outcome outcome
	freeIn  time.Duration // when taken: time until a quorum of nodes has let the key expire
}

// attempt makes one Redlock acquisition through redsync and, when it succeeds, assigns the
// grant's fencing token. The Redis calls do not follow ctx's cancellation (each is bounded by
// the node timeout): an attempt abandoned halfway would leave keys on a minority of nodes that
// redsync could not clean up, blocking others until they expire.
func (c *Client) attempt(ctx context.Context, name, owner string, lease time.Duration) (*grant, attemptResult) {
	ctx = context.WithoutCancel(ctx)
	expiry := lease
	if expiry == 0 {
		expiry = c.cfg.watchdogTimeout
	}
	value := c.grantValue(owner)
	common := []redsync.Option{
		redsync.WithExpiry(expiry),
		redsync.WithDriftFactor(c.cfg.driftFactor),
		// redsync bounds an acquisition by expiry*timeoutFactor; make that the node timeout
		// (each node call is bounded by it anyway).
		redsync.WithTimeoutFactor(float64(c.cfg.nodeTimeout) / float64(expiry)),
	}
	// Acquisition waits for every node's answer (each bounded by the node timeout) and is not
	// fail-fast: a failed attempt releases its value on every node, and with fail-fast that
	// release can overtake a SET NX still in flight on the slowest node, leaving a stray key
	// that lives a whole lease. A few strays on different nodes block every quorum.
	rm := c.rs.NewMutex(c.key(name), append(common,
		redsync.WithTries(1), // the wait loop is ours: woken by releases, not blind retries
		redsync.WithGenValueFunc(func() (string, error) { return value, nil }),
	)...)
	c.attempts.Add(1)
	err := rm.LockContext(ctx)
	if err != nil {
		v := classify(err)
		if v.unreachable > 0 {
			c.sweep.add(name, value) // a stalled node may still run our SET NX
		}
		if c.lostQuorum(v) {
			return nil, attemptResult{outcome: unavailable}
		}
		return nil, attemptResult{outcome: taken, freeIn: c.freeIn(ctx, name)}
	}
	// Renewal and release of the grant, on the other hand, may decide as soon as a quorum has
	// answered, so a stalled node does not slow them.
	held := c.rs.NewMutex(c.key(name), append(common, redsync.WithValue(value), redsync.WithFailFast(true))...)
	token, err := c.nextFence(ctx, name)
	if err == nil && time.Now().Before(rm.Until()) {
		return &grant{owner: owner, value: value, token: token, count: 1, fixed: lease > 0,
			rm: held, until: rm.Until(), lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}, attemptResult{outcome: granted}
	}
	// The token could not be made safe (no quorum, or the grant expired meanwhile): give the
	// grant back rather than hand out a lock without a valid token.
	if _, uerr := rm.UnlockContext(ctx); classify(uerr).unreachable > 0 {
		c.sweep.add(name, value)
	}
	if err != nil {
		return nil, attemptResult{outcome: unavailable}
	}
	return nil, attemptResult{outcome: taken}
}

// freeIn estimates when the lock frees itself: the time until a quorum of nodes no longer has
// the key (PTTL of the quorum-th shortest; unreachable nodes count as never). It is called by
// a contending waiter, so this client holds no grant of the lock: a key with one of this
// client's values is a leftover (an attempt whose SETs landed but whose replies came after the
// node timeout, and whose release did not land either; a release that did not reach the
// node), which would hold the lock for a whole lease with nobody holding it. freeIn deletes it.
func (c *Client) freeIn(ctx context.Context, name string) time.Duration {
	replies := onNodes(ctx, c, func(ctx context.Context, n redis.UniversalClient) (time.Duration, error) {
		ms, err := dropLeftoverOrTTL.Run(ctx, n, []string{c.key(name)}, c.prefix).Int64()
		return time.Duration(ms) * time.Millisecond, err
	}, nil)
	var ttls []time.Duration
	for _, r := range replies {
		if r.err == nil {
			ttls = append(ttls, max(r.v, 0)) // -2: no key, -1: no expiry (not ours to judge)
		}
	}
	if len(ttls) < c.quorum {
		return c.cfg.fallbackRetry
	}
	slices.Sort(ttls)
	return ttls[c.quorum-1]
}

// dropLeftoverOrTTL deletes the key if its value starts with ARGV[1] (a client's value prefix,
// see Client.prefix) and then answers -2, as PTTL does for no key; otherwise it answers the
// key's PTTL.
var dropLeftoverOrTTL = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	return -2
end
return redis.call('PTTL', KEYS[1])
`)

// install makes a successful contender the holder and starts its watchdog.
func (c *Client) install(st *state, w *waiter, g *grant) error {
	c.mu.Lock()
	st.removeLocked(w)
	if c.closed {
		st.promoteLocked()
		c.dropIfIdleLocked(st)
		c.mu.Unlock()
		_, _ = g.rm.UnlockContext(context.Background())
		return ErrClosed
	}
	st.holder = g
	delete(st.lost, g.owner)
	// Waiters of the same owner queued before the grant join it (reentrancy).
	for _, q := range slices.Clone(st.queue) {
		if q.owner == g.owner {
			st.removeLocked(q)
			g.count++
			q.notify(errJoined)
		}
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go c.keepAlive(st, g)
	return nil
}

// failQueue fails the whole local queue after an attempt found no quorum: the waiters behind
// would find the same, one node timeout each.
func (c *Client) failQueue(st *state, w *waiter, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range st.queue {
		if q != w {
			q.notify(err)
		}
	}
	st.queue = nil
	c.dropIfIdleLocked(st)
}

// Unlock releases one hold of the context's owner; the lock is released in Redis, and its
// waiters woken, when the hold count reaches 0. It returns ErrNotOwner, changing nothing, when
// the owner does not hold the lock; ErrLockLost when the owner's grant ended before (fixed lease
// run out, lock found lost, client closed); ErrUnavailable when the release could not reach a
// quorum (the lease then runs out by itself). The release is attempted even if ctx has ended.
func (m *Mutex) Unlock(ctx context.Context) error {
	owner, err := ownerOf(ctx)
	if err != nil {
		return err
	}
	c := m.c
	c.mu.Lock()
	st := c.locks[m.name]
	if st == nil {
		c.mu.Unlock()
		return m.wrap("unlock", ErrNotOwner)
	}
	g := st.holder
	if g == nil || g.owner != owner || g.ending {
		_, lost := st.lost[owner]
		delete(st.lost, owner)
		c.dropIfIdleLocked(st)
		c.mu.Unlock()
		if lost {
			return m.wrap("unlock", ErrLockLost)
		}
		return m.wrap("unlock", ErrNotOwner)
	}
	if g.count > 1 {
		g.count--
		c.mu.Unlock()
		return nil
	}
	// The holder stays in place, marked ending, until Redis has released the key, so the next
	// local waiter does not contend against our own key.
	g.ending = true
	valid := time.Now().Before(g.until) // did the critical section end within the grant?
	close(g.stop)
	c.mu.Unlock()
	<-g.done // the watchdog has stopped: redsync's Mutex is not safe for concurrent use

	ok, rerr := g.rm.UnlockContext(context.WithoutCancel(ctx))
	if classify(rerr).unreachable > 0 {
		c.sweep.add(m.name, g.value) // nodes that missed the release drop the key when they answer
	}
	switch {
	case ok:
		err = nil
	case c.lostQuorum(classify(rerr)):
		err = ErrUnavailable
	default:
		err = ErrLockLost
	}
	if ok && !valid {
		// Our value was still on a quorum, so nobody else held the lock, but its validity had
		// passed: the critical section ran on borrowed time.
		err = ErrLockLost
	}

	if ok {
		c.mu.Lock()
		localWaiters := len(st.queue) > 0
		async := !localWaiters && !c.closed
		if async {
			c.wg.Add(1)
		}
		c.mu.Unlock()
		if async {
			go func() {
				defer c.wg.Done()
				c.publishRelease(m.name, g.value, nil)
			}()
		} else if localWaiters {
			// Our next waiter is woken only once the other processes' waiters have been told
			// (a node has published): in-process waiters get no head start over other pods'.
			c.publishRelease(m.name, g.value, func(ok, _ int) bool { return ok > 0 })
		}
	}

	c.mu.Lock()
	st.holder = nil
	g.end()
	st.promoteLocked()
	c.dropIfIdleLocked(st)
	c.mu.Unlock()
	return m.wrap("unlock", err)
}

// publishRelease wakes the waiters of every process: one message on every node, so one lost
// node or message does not strand them. The payload (the grant's value) lets a subscriber count
// the copies as one release. done, as for onNodes, may return before every node has answered.
func (c *Client) publishRelease(name, value string, done func(ok, failed int) bool) {
	onNodes(context.Background(), c, func(ctx context.Context, n redis.UniversalClient) (int64, error) {
		return n.Publish(ctx, c.key(name), value).Result()
	}, done)
}

// Fence returns the fencing token of the context owner's current grant, and whether the owner
// holds the lock. Tokens grow with every grant of the lock (see nextFence); pass it to the
// storage the lock protects so that it can refuse a stale holder's write.
func (m *Mutex) Fence(ctx context.Context) (int64, bool) {
	g := m.held(ctx)
	if g == nil {
		return 0, false
	}
	return g.token, true
}

// Lost returns a channel that is closed when the context owner's grant ends: at once when the
// watchdog finds the lock lost or cannot renew it in time, when a fixed lease runs out, when the
// Client is closed, and on the final Unlock. A critical section selects on it. For an owner that
// does not hold the lock the channel is already closed.
func (m *Mutex) Lost(ctx context.Context) <-chan struct{} {
	if g := m.held(ctx); g != nil {
		return g.lost
	}
	return closedChan
}

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// IsHeldByCurrent reports whether the context's owner holds the lock and its grant is still
// valid (Redisson's isHeldByCurrentThread). It asks no node: owners are process-local.
func (m *Mutex) IsHeldByCurrent(ctx context.Context) bool {
	g := m.held(ctx)
	return g != nil && time.Now().Before(g.validUntil(m.c))
}

// HoldCount returns how many times the context's owner holds the lock (Redisson's
// getHoldCount); 0 when it does not.
func (m *Mutex) HoldCount(ctx context.Context) int {
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := m.heldLocked(ctx); g != nil {
		return g.count
	}
	return 0
}

func (m *Mutex) held(ctx context.Context) *grant {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return m.heldLocked(ctx)
}

func (m *Mutex) heldLocked(ctx context.Context) *grant {
	owner, err := ownerOf(ctx)
	if err != nil {
		return nil
	}
	st := m.c.locks[m.name]
	if st == nil || st.holder == nil || st.holder.owner != owner || st.holder.ending {
		return nil
	}
	return st.holder
}

// IsLocked reports whether anyone, in any process, holds the lock: whether a quorum of nodes has
// its key (Redisson's isLocked). It needs no owner. ErrUnavailable when no quorum answers.
func (m *Mutex) IsLocked(ctx context.Context) (bool, error) {
	c := m.c
	c.mu.Lock()
	st := c.locks[m.name]
	local := st != nil && st.holder != nil && time.Now().Before(st.holder.until)
	c.mu.Unlock()
	if local {
		return true, nil
	}
	replies := onNodes(ctx, c, func(ctx context.Context, n redis.UniversalClient) (int64, error) {
		return n.Exists(ctx, c.key(m.name)).Result()
	}, nil)
	answered, present := 0, 0
	for _, r := range replies {
		if r.err == nil {
			answered++
			present += int(r.v)
		}
	}
	if answered < c.quorum {
		return false, m.wrap("is locked", ErrUnavailable)
	}
	return present >= c.quorum, nil
}

// RemainingLease returns how long the lock stays held unless renewed or released: the time until
// a quorum of nodes lets its key expire (Redisson's remainTimeToLive); 0 when it is not held. It
// needs no owner. ErrUnavailable when no quorum answers.
func (m *Mutex) RemainingLease(ctx context.Context) (time.Duration, error) {
	c := m.c
	replies := onNodes(ctx, c, func(ctx context.Context, n redis.UniversalClient) (time.Duration, error) {
		return n.PTTL(ctx, c.key(m.name)).Result()
	}, nil)
	var ttls []time.Duration
	for _, r := range replies {
		if r.err == nil {
			ttls = append(ttls, max(r.v, 0))
		}
	}
	if len(ttls) < c.quorum {
		return 0, m.wrap("remaining lease", ErrUnavailable)
	}
	// The key lives while a quorum has it: the quorum-th longest TTL.
	slices.SortFunc(ttls, func(a, b time.Duration) int { return int(b - a) })
	return ttls[c.quorum-1], nil
}

// Holder returns the holder info (WithHolderInfo) of the grant that holds the lock, and
// whether a quorum of nodes agrees on it. When this process holds the lock it answers from
// memory. Otherwise it reads the key on every node: info is "" when no node that answered
// has a grant carrying info. A value read from a minority (agreed false) still helps a process
// cut off from the quorum find the holder, but, like any value read from the nodes, it is a
// hint: whoever acts on it must have the holder confirm. ErrUnavailable when no node answers.
func (m *Mutex) Holder(ctx context.Context) (info string, agreed bool, err error) {
	c := m.c
	c.mu.Lock()
	st := c.locks[m.name]
	local := st != nil && st.holder != nil && !st.holder.ending
	c.mu.Unlock()
	if local {
		return c.cfg.holderInfo, true, nil
	}
	replies := onNodes(ctx, c, func(ctx context.Context, n redis.UniversalClient) (string, error) {
		v, err := n.Get(ctx, c.key(m.name)).Result()
		if errors.Is(err, redis.Nil) {
			return "", nil
		}
		return v, err
	}, nil)
	votes := map[string]int{}
	answered := 0
	for _, r := range replies {
		if r.err != nil {
			continue
		}
		answered++
		if r.v != "" {
			votes[r.v]++
		}
	}
	if answered == 0 {
		return "", false, m.wrap("holder", ErrUnavailable)
	}
	best, n := "", 0
	for v, k := range votes {
		if k > n || (k == n && v < best) {
			best, n = v, k
		}
	}
	info, _, hasInfo := strings.Cut(best, " ")
	if !hasInfo {
		info = ""
	}
	return info, n >= c.quorum, nil
}
