package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// NewNodes returns one go-redis client per address, each an independent Redlock node, configured
// for a lock: every socket timeout is short (200 ms) so a stalled node costs one short wait
// instead of go-redis's default 3 s, retries are off (the lock's own wait loop retries, and a
// retried SET NX could outlive its validity), and context deadlines bound socket I/O. Pass the
// result to New, which then owns the clients.
//
// Callers that build their own clients should do the same: ReadTimeout, WriteTimeout and
// DialTimeout of a few hundred milliseconds at most, MaxRetries -1 and ContextTimeoutEnabled.
// The lock bounds every per-node call by WithNodeTimeout regardless, but a client with long
// timeouts keeps an abandoned connection busy for as long as its own timeout.
func NewNodes(addrs []string, username, password string) []redis.UniversalClient {
	nodes := make([]redis.UniversalClient, len(addrs))
	for i, addr := range addrs {
		nodes[i] = redis.NewClient(&redis.Options{
			Addr:                  addr,
			Username:              username, // empty: the default user
			Password:              password,
			DialTimeout:           200 * time.Millisecond,
			ReadTimeout:           200 * time.Millisecond,
			WriteTimeout:          200 * time.Millisecond,
			PoolTimeout:           300 * time.Millisecond,
			PoolSize:              nodePoolSize,
			MaxRetries:            -1,
			ContextTimeoutEnabled: true,
			DisableIdentity:       true,
			// Plain Redis nodes send no maintenance notifications; probing for them costs a
			// round trip on every new connection.
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		})
	}
	return nodes
}

// nodePoolSize is the connections per node. Every coupon being acquired, renewed or released
// at a moment has a call in flight on every node (plus the pub/sub and facts connections), and
// a call that waits for a pooled connection spends its node timeout waiting: with go-redis's
// default (10 per CPU, 20 here) a hundred coupons opening together made healthy nodes look
// unreachable. 256 covers a few hundred coupons busy at once; a Redis node serves thousands
// of connections, and idle ones close after go-redis's idle timeout (30 min) at a few KB each.
const nodePoolSize = 256

// bounded runs fn with a context that ends after d and returns when fn returns or d has passed,
// whichever is first. It does not trust the client to honour the deadline: a node frozen by
// SIGSTOP keeps an accepted TCP connection open and answers nothing, and a client without
// ContextTimeoutEnabled would wait out its ReadTimeout. The abandoned call finishes in the
// background.
func bounded[T any](ctx context.Context, d time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// nodePool adapts one node to redsync's Pool, bounding every command by the node timeout, so
// redsync's Lock, Extend and Unlock never wait on a stalled node longer than that.
type nodePool struct {
	inner   redsyncredis.Pool
	timeout time.Duration
}

func newNodePool(client redis.UniversalClient, timeout time.Duration) *nodePool {
	return &nodePool{inner: goredis.NewPool(client), timeout: timeout}
}

func (p *nodePool) Get(ctx context.Context) (redsyncredis.Conn, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	return &nodeConn{pool: p, ctx: ctx}, nil
}

// nodeConn runs each command through the wrapped pool under its own timeout.
type nodeConn struct {
	pool *nodePool
	ctx  context.Context
}

func call[T any](c *nodeConn, fn func(redsyncredis.Conn) (T, error)) (T, error) {
	return bounded(c.ctx, c.pool.timeout, func(ctx context.Context) (T, error) {
		conn, err := c.pool.inner.Get(ctx)
		if err != nil {
			var zero T
			return zero, err
		}
		defer conn.Close()
		return fn(conn)
	})
}

func (c *nodeConn) Get(name string) (string, error) {
	return call(c, func(conn redsyncredis.Conn) (string, error) { return conn.Get(name) })
}

func (c *nodeConn) Set(name, value string) (bool, error) {
	return call(c, func(conn redsyncredis.Conn) (bool, error) { return conn.Set(name, value) })
}

func (c *nodeConn) SetNX(name, value string, expiry time.Duration) (bool, error) {
	return call(c, func(conn redsyncredis.Conn) (bool, error) { return conn.SetNX(name, value, expiry) })
}

func (c *nodeConn) Eval(script *redsyncredis.Script, keysAndArgs ...any) (any, error) {
	return call(c, func(conn redsyncredis.Conn) (any, error) { return conn.Eval(script, keysAndArgs...) })
}

func (c *nodeConn) ScriptLoad(script *redsyncredis.Script) error {
	_, err := call(c, func(conn redsyncredis.Conn) (struct{}, error) { return struct{}{}, conn.ScriptLoad(script) })
	return err
}

func (c *nodeConn) PTTL(name string) (time.Duration, error) {
	return call(c, func(conn redsyncredis.Conn) (time.Duration, error) { return conn.PTTL(name) })
}

func (c *nodeConn) Close() error { return nil }

// nodeReply is one node's answer to a call made on every node.
type nodeReply[T any] struct {
	node int
	v    T
	err  error
}

// onNodes calls fn on every node concurrently, each call bounded by the node timeout, and
// returns the replies in arrival order. It returns early, leaving slower calls to finish in the
// background, as soon as done reports that the replies so far decide the outcome; a nil done
// waits for every node.
func onNodes[T any](ctx context.Context, c *Client, fn func(context.Context, redis.UniversalClient) (T, error),
	done func(ok, failed int) bool) []nodeReply[T] {
	ch := make(chan nodeReply[T], len(c.nodes))
	for i, node := range c.nodes {
		go func() {
			v, err := bounded(ctx, c.cfg.nodeTimeout, func(ctx context.Context) (T, error) { return fn(ctx, node) })
			ch <- nodeReply[T]{node: i, v: v, err: err}
		}()
	}
	replies := make([]nodeReply[T], 0, len(c.nodes))
	ok, failed := 0, 0
	for range c.nodes {
		r := <-ch
		replies = append(replies, r)
		if r.err != nil {
			failed++
		} else {
			ok++
		}
		if done != nil && done(ok, failed) {
			break
		}
	}
	return replies
}

// quorumDecided stops onNodes once a quorum has answered or can no longer answer.
func (c *Client) quorumDecided(ok, failed int) bool {
	return ok >= c.quorum || len(c.nodes)-failed < c.quorum
}

// verdict counts what redsync's joined per-node errors say about the nodes.
type verdict struct {
	unreachable int // nodes that did not answer (network error, timeout)
	taken       int // nodes that answered that the key is not ours
}

func classify(err error) verdict {
	var v verdict
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *redsync.RedisError, redsync.RedisError:
			v.unreachable++
		case *redsync.ErrNodeTaken, redsync.ErrNodeTaken:
			v.taken++
		case *redsync.ErrTaken:
			v.taken += len(e.Nodes)
		case redsync.ErrTaken:
			v.taken += len(e.Nodes)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		default:
			if err == redsync.ErrLockAlreadyExpired {
				v.taken++
			}
		}
	}
	walk(err)
	return v
}

// lostQuorum reports whether fewer than a quorum of nodes answered.
func (c *Client) lostQuorum(v verdict) bool {
	return len(c.nodes)-v.unreachable < c.quorum
}

// deniedByQuorum reports whether so many nodes deny holding the key that a quorum can no longer
// confirm it: the grant is certainly gone.
func (c *Client) deniedByQuorum(v verdict) bool {
	return len(c.nodes)-v.taken < c.quorum
}

// Ping reports whether a quorum of the nodes answers, as a readiness check: ErrUnavailable
// (wrapping the nodes' errors) when fewer than a quorum do.
func (c *Client) Ping(ctx context.Context) error {
	replies := onNodes(ctx, c, func(ctx context.Context, n redis.UniversalClient) (string, error) {
		return n.Ping(ctx).Result()
	}, c.quorumDecided)
	var failed []error
	for _, r := range replies {
		if r.err != nil {
			failed = append(failed, r.err)
		}
	}
	if len(replies)-len(failed) < c.quorum {
		return fmt.Errorf("lock: %d of %d nodes answer, quorum is %d: %w: %w",
			len(replies)-len(failed), len(c.nodes), c.quorum, ErrUnavailable, errors.Join(failed...))
	}
	return nil
}
