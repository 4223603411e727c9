package lock

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// fenceRaise sets the fencing counter to ARGV[1] unless it is already higher, and returns the
// counter. Raising to a maximum (not incrementing) is what lets tokens be assigned from a quorum
// read: see nextFence.
//
// A counter that is not a number, or is beyond MaxFence (written by something else: tokens grow
// by one per grant and never get there), is overwritten: it would otherwise stop every grant.
var fenceRaise = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if cur == nil or cur > tonumber(ARGV[2]) or want > cur then
	redis.call('SET', KEYS[1], ARGV[1])
	return want
end
return cur
`)

// MaxFence bounds a fencing token: 2^53, where Lua's numbers stop being exact, far beyond what
// one grant per millisecond reaches in a hundred thousand years. A counter read above it is
// corrupt and ignored (the store's own check stays the guard; see AdvanceFence).
const MaxFence = 1 << 53

// nextFence assigns the fencing token of a grant just acquired, in two phases over all nodes:
//
//  1. read the lock's counter on every node and wait for a quorum of replies; T = max + 1;
//  2. raise the counter to T on every node (fenceRaise) and wait for a quorum of acks.
//
// Why every grant's token exceeds every earlier grant's, while nodes keep their data: let grant
// A get token Ta and a later grant B get Tb. A finished phase 2 within its validity (attempt
// checks), and B was acquired only after A's validity ended (Redlock's exclusion, drift
// included), so the phase-2 writes of A, acked by a quorum Qa, precede B's phase-1 reads from a
// quorum Qb. Two quorums of one node set intersect; the common node's counter is >= Ta when B
// reads it (the counter never decreases), so B's max >= Ta and Tb >= Ta + 1. Redisson's fenced
// lock does a single INCR on one master; over independent nodes an INCR per node would not
// do, as nodes' counters differ.
//
// The limit: a node that restarts empty forgets its counter. If Qa ∩ Qb is exactly such a
// node, Tb can be <= Ta; if every node restarts empty, tokens start again at 1. Redlock's own
// exclusion has the same weakness (a restarted node forgets the key), which is why the store
// the lock protects must check tokens itself, and why AdvanceFence exists.
func (c *Client) nextFence(ctx context.Context, name string) (int64, error) {
	key := c.fenceKey(name)
	replies := onNodes(ctx, c, func(ctx context.Context, n redis.UniversalClient) (int64, error) {
		v, err := n.Get(ctx, key).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		var numErr *strconv.NumError
		if errors.As(err, &numErr) || (err == nil && (v < 0 || v > MaxFence)) {
			return 0, nil // corrupt: counted as no counter, and overwritten by the raise
		}
		return v, err
	}, c.quorumDecided)
	var top int64
	answered := 0
	for _, r := range replies {
		if r.err == nil {
			answered++
			top = max(top, r.v)
		}
	}
	if answered < c.quorum {
		return 0, ErrUnavailable
	}
	token := top + 1
	if err := c.raiseFence(ctx, key, token); err != nil {
		return 0, err
	}
	return token, nil
}

func (c *Client) raiseFence(ctx context.Context, key string, v int64) error {
	replies := onNodes(ctx, c, func(ctx context.Context, n redis.UniversalClient) (int64, error) {
		return fenceRaise.Run(ctx, n, []string{key}, v, int64(MaxFence)).Int64()
	}, c.quorumDecided)
	acked := 0
	for _, r := range replies {
		if r.err == nil {
			acked++
		}
	}
	if acked < c.quorum {
		return ErrUnavailable
	}
	return nil
}

// AdvanceFence raises the fencing counter of the named lock to at least atLeast on a quorum of
// nodes, so that every later grant's token is greater. Call it when the protected store refuses a
// token because it has accepted a higher one (nodes restarted empty and the counter went back),
// then acquire a new grant. ErrUnavailable when no quorum acks.
func (c *Client) AdvanceFence(ctx context.Context, name string, atLeast int64) error {
	if atLeast < 0 || atLeast > MaxFence {
		return fmt.Errorf("advance fence %s: %d is not a fencing token", name, atLeast)
	}
	if err := c.raiseFence(ctx, c.fenceKey(name), atLeast); err != nil {
		return fmt.Errorf("advance fence %s: %w", name, err)
	}
	return nil
}
