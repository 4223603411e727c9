package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

var (
	// ErrNoOwner is returned by a call whose context carries no owner (see WithOwner).
	ErrNoOwner = errors.New("lock: context carries no owner")
	// ErrNotOwner is returned by Unlock when the context's owner does not hold the lock; nothing
	// is changed.
	ErrNotOwner = errors.New("lock: not held by this owner")
	// ErrLockLost is returned by Unlock when the grant ended before it: a fixed lease ran out, the
	// watchdog found the lock gone, or the Client was closed.
	ErrLockLost = errors.New("lock: lock lost before unlock")
	// ErrTimeout is returned when the lock was not acquired within the wait (or the context's
	// deadline, in which case the error also matches context.DeadlineExceeded).
	ErrTimeout = errors.New("lock: not acquired within the wait")
	// ErrUnavailable is returned, without waiting out the wait, when fewer than a quorum of nodes
	// answer.
	ErrUnavailable = errors.New("lock: quorum of redis nodes unavailable")
	// ErrClosed is returned by calls on a closed Client.
	ErrClosed = errors.New("lock: client closed")
)

type ownerKey struct{}

// WithOwner returns a context carrying the owner identity: calls with the same owner are the
// same holder (reentrancy, unlock rights). An owner must be unique within the process, e.g.
// NewOwner per request.
func WithOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

// NewOwner returns a random, unique owner identity.
func NewOwner() string { return uuid.NewString() }

func ownerOf(ctx context.Context) (string, error) {
	if o, ok := ctx.Value(ownerKey{}).(string); ok && o != "" {
		return o, nil
	}
	return "", ErrNoOwner
}

// Option configures a Client.
type Option func(*config)

type config struct {
	holderInfo      string
	watchdogTimeout time.Duration
	renewInterval   time.Duration
	driftFactor     float64
	nodeTimeout     time.Duration
	fallbackRetry   time.Duration
	keyPrefix       string
}

// DefaultWatchdogTimeout is the lease used when no lease is given. Redisson's lockWatchdogTimeout
// is 30 s; a flash crowd cannot wait that long for a crashed holder's lock, so the default here
// frees a dead holder's lock within 1.5 s. A live holder renews every 500 ms (a third of it), so
// it loses the lock only when two renewals in a row fail or it stalls for about a second: far
// beyond Go's GC pauses (sub-millisecond) and ordinary scheduling delays. When it does lose it,
// Lost closes and the protected store's fencing check refuses its late writes.
const DefaultWatchdogTimeout = 1500 * time.Millisecond

// WithWatchdogTimeout sets the lease used when no lease is given (Redisson's
// lockWatchdogTimeout). Default DefaultWatchdogTimeout.
func WithWatchdogTimeout(d time.Duration) Option { return func(c *config) { c.watchdogTimeout = d } }

// WithHolderInfo sets a short string (no spaces) stored with every grant of this Client, for
// other processes to read with Mutex.Holder: for instance the address at which the holder can
// be reached. Anyone who can write to the nodes can forge it, so treat it as a hint to verify.
func WithHolderInfo(info string) Option { return func(c *config) { c.holderInfo = info } }

// WithRenewInterval sets how often the watchdog renews a lease. Default (and whenever it is not
// below the watchdog timeout): the watchdog timeout divided by 3, so two renewals can fail
// before the lease runs out.
func WithRenewInterval(d time.Duration) Option { return func(c *config) { c.renewInterval = d } }

// WithDriftFactor sets the fraction of a lease assumed lost to clock drift between nodes; a grant
// is trusted only until lease - elapsed - lease*factor. Default 0.01 (redsync's and Redlock's).
func WithDriftFactor(f float64) Option { return func(c *config) { c.driftFactor = f } }

// WithNodeTimeout bounds every call to one node. Default 100ms: a Redis command on a LAN takes
// well under 1ms and a loaded node a few ms, so 100ms is far beyond a healthy answer yet keeps
// a stalled node from stalling a grant (the time counts against the lease) and makes a lost
// quorum fail within about 100ms. Keep it far below the lease.
func WithNodeTimeout(d time.Duration) Option { return func(c *config) { c.nodeTimeout = d } }

// WithFallbackRetry bounds how long a waiter sleeps without a release message before it tries
// again (it sleeps min(the lock's remaining lease, this)), so a lost message costs at most this.
// Default 500ms.
func WithFallbackRetry(d time.Duration) Option { return func(c *config) { c.fallbackRetry = d } }

// WithKeyPrefix sets the prefix of lock keys: lock name "coupon:X" is key "lock:coupon:X", and
// its release channel has the same name. The fencing counter is "<prefix>fence:{name}", so lock
// names starting with "fence:" are reserved. Default "lock:".
func WithKeyPrefix(p string) Option { return func(c *config) { c.keyPrefix = p } }

// Client is the process's handle on the lock nodes: it owns the node clients, one pub/sub
// connection per node, the watchdogs and the local state of every lock in use. Create one per
// process with New; it is safe for concurrent use.
type Client struct {
	cfg    config
	nodes  []redis.UniversalClient
	rs     *redsync.Redsync
	quorum int
	id     string
	prefix string // starts every grant value of this Client and no other's: holder info and a space (if any), id, ":"
	seq    atomic.Uint64
	subs   *subscriber
	sweep  *sweeper

	mu     sync.Mutex
	locks  map[string]*state // by lock name; present while held, awaited or lost-but-unreported
	closed bool
	done   chan struct{}  // closed by Close
	wg     sync.WaitGroup // watchdogs and background publishes

	attempts atomic.Int64 // acquisition attempts sent to Redis (observed by tests)
}

// New returns a Client over the given nodes (each an independent Redis server; see NewNodes).
// The Client owns the node clients and closes them in Close.
func New(nodes []redis.UniversalClient, opts ...Option) *Client {
	cfg := config{
		watchdogTimeout: DefaultWatchdogTimeout,
		driftFactor:     0.01,
		nodeTimeout:     100 * time.Millisecond,
		fallbackRetry:   500 * time.Millisecond,
		keyPrefix:       "lock:",
	}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.holderInfo = strings.Join(strings.Fields(cfg.holderInfo), "_") // Holder splits at the first space
	if cfg.renewInterval <= 0 || cfg.renewInterval >= cfg.watchdogTimeout {
		cfg.renewInterval = cfg.watchdogTimeout / 3
	}
	pools := make([]redsyncredis.Pool, len(nodes))
	for i, n := range nodes {
		pools[i] = newNodePool(n, cfg.nodeTimeout)
	}
	c := &Client{
		cfg:    cfg,
		nodes:  nodes,
		rs:     redsync.New(pools...),
		quorum: len(nodes)/2 + 1,
		id:     uuid.NewString(),
		locks:  make(map[string]*state),
		done:   make(chan struct{}),
	}
	c.prefix = c.id + ":"
	if cfg.holderInfo != "" {
		c.prefix = cfg.holderInfo + " " + c.prefix
	}
	c.subs = newSubscriber(c)
	c.sweep = newSweeper(c)
	return c
}

// Close stops every watchdog (holders' Lost channels close and their later Unlock returns
// ErrLockLost; the leases then run out in Redis by themselves), fails pending waiters with
// ErrClosed, and closes the pub/sub connections and the node clients. It does not release held
// locks: a closed client behaves like a dead process.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	for _, st := range c.locks {
		for _, w := range st.queue {
			w.notify(ErrClosed)
		}
		st.queue = nil
	}
	c.mu.Unlock()
	c.wg.Wait()
	err := c.subs.close()
	for _, n := range c.nodes {
		err = errors.Join(err, n.Close())
	}
	return err
}

// Mutex returns a handle on the lock called name. Handles are cheap: the lock's state lives in
// the Client, so any number of handles on one name share it.
func (c *Client) Mutex(name string) *Mutex { return &Mutex{c: c, name: name} }

func (c *Client) key(name string) string      { return c.cfg.keyPrefix + name }
func (c *Client) fenceKey(name string) string { return c.cfg.keyPrefix + "fence:{" + name + "}" }

// nameOf maps a release channel back to its lock name.
func (c *Client) nameOf(channel string) (string, bool) {
	return strings.CutPrefix(channel, c.cfg.keyPrefix)
}

// grantValue is the value stored under the lock key for one grant: unique per grant, and it
// says which client and owner hold it (useful when reading keys by hand), preceded by the
// Client's holder info and a space when it has one (see Holder).
func (c *Client) grantValue(owner string) string {
	return fmt.Sprintf("%s%d:%s", c.prefix, c.seq.Add(1), owner)
}

// state is the process-local state of one lock name. Guarded by Client.mu.
type state struct {
	name   string
	holder *grant
	// queue holds this process's waiters in arrival order; when there is no holder, queue[0]
	// is the only one contending for the lock in Redis.
	queue []*waiter
	// lost records owners whose grant ended without Unlock, so their Unlock reports ErrLockLost.
	lost map[string]struct{}

	wake        chan struct{} // a release was published (capacity 1)
	lastRelease string        // payload of the last release seen (each is published on every node)
	subscribed  bool
	subReady    chan struct{} // closed when a node confirms the subscription
}

func (c *Client) stateLocked(name string) *state {
	st := c.locks[name]
	if st == nil {
		st = &state{name: name, lost: make(map[string]struct{}), wake: make(chan struct{}, 1)}
		c.locks[name] = st
	}
	return st
}

// dropIfIdleLocked forgets a state nobody holds, awaits or must be told about.
func (c *Client) dropIfIdleLocked(st *state) {
	if st.holder != nil || len(st.queue) > 0 || len(st.lost) > 0 || c.locks[st.name] != st {
		return
	}
	delete(c.locks, st.name)
	if st.subscribed {
		c.subs.unsubscribe(c.key(st.name))
	}
}

// promoteLocked gives the turn to the head of the queue when nobody holds the lock here.
func (st *state) promoteLocked() {
	if st.holder == nil && len(st.queue) > 0 && !st.queue[0].signalled {
		st.queue[0].notify(nil)
	}
}

func (st *state) removeLocked(w *waiter) bool {
	for i, q := range st.queue {
		if q == w {
			st.queue = append(st.queue[:i], st.queue[i+1:]...)
			return true
		}
	}
	return false
}

// waiter is one Lock or TryLock call waiting in the local queue.
type waiter struct {
	owner     string
	turn      chan error // capacity 1: nil = contend now, errJoined = reentered, else fail
	signalled bool
}

func (w *waiter) notify(err error) {
	w.signalled = true
	select {
	case w.turn <- err:
	default:
	}
}

// errJoined tells a queued waiter that its owner acquired the lock meanwhile (reentrancy).
var errJoined = errors.New("lock: joined the owner's grant")
