// Package notify broadcasts short notices to every instance of the service over Redis pub/sub.
//
// The Redis nodes are independent (the lock's Redlock nodes), so a notice is published on every
// node and an instance listens on every node: it still hears a notice while some nodes are down,
// and hears each notice once (copies from the other nodes are recognised by their id and
// dropped). Delivery is best effort, as Redis pub/sub is: a subscriber that is reconnecting
// misses what is published meanwhile, so users of notices must bound the cost of a lost one.
// With the instances' shared key (package seal), a notice published by anything else is
// dropped: whatever can reach Redis cannot speak for an instance.
package notify

import (
	"context"
	"couponsvc/internal/seal"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// publishTimeout bounds a publish on one node: a stalled node must not hold up an admin call.
const publishTimeout = 500 * time.Millisecond

// recent is how many notice ids a subscriber remembers to drop the copies from other nodes;
// copies arrive within milliseconds of each other, far fewer notices than this apart.
const recent = 1024

// MaxNotice bounds a notice's size: a larger one is not sent, and dropped when received.
const MaxNotice = 64 << 10

// Bus publishes and receives notices on one channel of every node.
type Bus struct {
	nodes   []redis.UniversalClient
	channel string
	key     seal.Key
}

// New returns a Bus on channel over nodes. With a key, every notice carries its MAC and a
// notice without the right one (published by anything but an instance that has the key) is
// dropped. It does not own the clients: close them after the last Subscribe returned.
func New(nodes []redis.UniversalClient, channel string, key seal.Key) *Bus {
	return &Bus{nodes: nodes, channel: channel, key: key}
}

// Publish sends msg to every subscriber of every node. It succeeds when at least one node took
// it (subscribers listen on all nodes).
func (b *Bus) Publish(ctx context.Context, msg string) error {
	if len(msg) > MaxNotice {
		return fmt.Errorf("publish on %s: notice of %d bytes, over %d", b.channel, len(msg), MaxNotice)
	}
	id := uuid.NewString()
	payload := id + " " + b.key.Sum([]byte(b.channel), []byte(id), []byte(msg)) + " " + msg
	errs := make(chan error, len(b.nodes))
	for _, n := range b.nodes {
		go func() {
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			defer cancel()
			errs <- n.Publish(pctx, b.channel, payload).Err()
		}()
	}
	var failed []error
	for range b.nodes {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) == len(b.nodes) {
		return fmt.Errorf("publish on %s: no node took it: %w", b.channel, errors.Join(failed...))
	}
	return nil
}

// Subscribe calls handle with each notice, once, in the order first received, until ctx ends.
// It reconnects to a node that goes away by itself.
func (b *Bus) Subscribe(ctx context.Context, handle func(msg string)) {
	type notice struct{ id, msg string }
	in := make(chan notice, 64)
	var wg sync.WaitGroup
	for _, n := range b.nodes {
		ps := n.Subscribe(ctx, b.channel)
		wg.Go(func() {
			<-ctx.Done()
			ps.Close()
		})
		wg.Go(func() {
			for m := range ps.Channel() {
				id, rest, ok := strings.Cut(m.Payload, " ")
				mac, msg, ok2 := strings.Cut(rest, " ")
				if !ok || !ok2 || len(msg) > MaxNotice || !b.key.Verify(mac, []byte(b.channel), []byte(id), []byte(msg)) {
					continue // not from an instance: dropped
				}
				select {
				case in <- notice{id, msg}:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	seen := make(map[string]struct{}, recent)
	order := make([]string, 0, recent)
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case n := <-in:
			if _, dup := seen[n.id]; dup {
				continue
			}
			if len(order) == recent {
				delete(seen, order[0])
				order = order[1:]
			}
			seen[n.id] = struct{}{}
			order = append(order, n.id)
			handle(n.msg)
		}
	}
}
