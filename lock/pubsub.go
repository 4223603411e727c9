package lock

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscriber is the Client's one pub/sub connection per node. A lock's release channel is
// subscribed while the lock has local waiters contending in Redis, and messages are dispatched
// to the lock's local state, where the one contending waiter picks them up.
type subscriber struct {
	c     *Client
	nodes []*subNode
	wg    sync.WaitGroup
}

// subNode serialises (un)subscriptions on one node's connection: they are sent by one goroutine,
// in order, so an unsubscribe can never overtake a later subscribe to the same channel, and
// callers never block on a stalled node.
type subNode struct {
	ps   *redis.PubSub
	mu   sync.Mutex
	ops  []subOp
	kick chan struct{}
}

type subOp struct {
	subscribe bool
	channel   string
}

// subscribeTimeout bounds one (un)subscribe; go-redis keeps the channel set and subscribes it
// again on reconnect, so a timed-out command is not lost.
const subscribeTimeout = 5 * time.Second

func newSubscriber(c *Client) *subscriber {
	s := &subscriber{c: c}
	for _, n := range c.nodes {
		sn := &subNode{ps: n.Subscribe(context.Background()), kick: make(chan struct{}, 1)}
		s.nodes = append(s.nodes, sn)
		msgs := sn.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
		s.wg.Add(2)
		go s.receive(msgs)
		go s.apply(sn)
	}
	return s
}

func (s *subscriber) subscribe(channel string)   { s.enqueue(subOp{subscribe: true, channel: channel}) }
func (s *subscriber) unsubscribe(channel string) { s.enqueue(subOp{channel: channel}) }

func (s *subscriber) enqueue(op subOp) {
	for _, sn := range s.nodes {
		sn.mu.Lock()
		sn.ops = append(sn.ops, op)
		sn.mu.Unlock()
		select {
		case sn.kick <- struct{}{}:
		default:
		}
	}
}

func (s *subscriber) apply(sn *subNode) {
	defer s.wg.Done()
	for {
		select {
		case <-sn.kick:
		case <-s.c.done:
			return
		}
		for {
			sn.mu.Lock()
			if len(sn.ops) == 0 {
				sn.mu.Unlock()
				break
			}
			op := sn.ops[0]
			sn.ops = sn.ops[1:]
			sn.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), subscribeTimeout)
			if op.subscribe {
				_ = sn.ps.Subscribe(ctx, op.channel)
			} else {
				_ = sn.ps.Unsubscribe(ctx, op.channel)
			}
			cancel()
		}
	}
}

func (s *subscriber) receive(msgs <-chan any) {
	defer s.wg.Done()
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Message:
			s.c.onRelease(m.Channel, m.Payload)
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				s.c.onSubscribed(m.Channel)
			}
		}
	}
}

func (s *subscriber) close() error {
	var err error
	for _, sn := range s.nodes {
		if e := sn.ps.Close(); e != nil && err == nil {
			err = e
		}
	}
	s.wg.Wait()
	return err
}

// onRelease wakes the lock's contending waiter. Every release is published on every node; the
// payload identifies the release, so its copies wake the waiter once.
func (c *Client) onRelease(channel, payload string) {
	name, ok := c.nameOf(channel)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.locks[name]
	if st == nil || payload == st.lastRelease {
		return
	}
	st.lastRelease = payload
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (c *Client) onSubscribed(channel string) {
	name, ok := c.nameOf(channel)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.locks[name]; st != nil && st.subReady != nil {
		select {
		case <-st.subReady:
		default:
			close(st.subReady)
		}
	}
}

// ensureSubscribed subscribes the lock's release channel if it is not yet, waiting (at most the
// node timeout) until a node confirms, so that a release published after this returns is seen.
// It reports whether it subscribed just now.
func (c *Client) ensureSubscribed(st *state) bool {
	c.mu.Lock()
	if st.subscribed {
		c.mu.Unlock()
		return false
	}
	st.subscribed = true
	st.subReady = make(chan struct{})
	ready := st.subReady
	c.subs.subscribe(c.key(st.name))
	c.mu.Unlock()
	t := time.NewTimer(c.cfg.nodeTimeout)
	defer t.Stop()
	select {
	case <-ready:
	case <-t.C:
	}
	return true
}
