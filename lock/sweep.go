package lock

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The sweeper removes what a failed acquisition or release may leave behind.
//
// A node that is stalled (SIGSTOP, a long pause, a congested link) keeps the commands already
// sent to it and runs them when it resumes, in whatever order its connections deliver them.
// So the SET NX of an acquisition that failed meanwhile can run after the release that redsync
// sent to undo it, and leave a key that nobody holds for a whole lease; a few such keys on
// different nodes block every quorum. The same goes for a release that a node did not answer.
// The sweeper therefore sends the release again (delete the key where it still holds the
// grant's value) to every node until each node has answered it twice, the second time one
// round after the first, so that a command buffered on another connection has run before it.
// A stray key then outlives the node's return by about two rounds (2 x the node timeout).

// releaseScript deletes a lock key only where it still holds the given grant's value (as
// redsync's release does).
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

const (
	// sweepAnswers is how many rounds in which a node answered the release it takes to be sure
	// nothing of the grant is left on that node.
	sweepAnswers = 2
	// sweepMaxAge bounds how long one grant's leftovers are swept for: a node that comes back
	// later still drops them when its lease runs out.
	sweepMaxAge = time.Minute
	// sweepMaxPending bounds the grants being swept (a long outage with many coupons retrying);
	// past it the oldest are dropped, and their keys, if any, live out their lease.
	sweepMaxPending = 4096
)

type sweepEntry struct {
	key, value string
	since      time.Time
	need       []int // per node: answers still needed
}

type sweeper struct {
	c       *Client
	mu      sync.Mutex
	pending []*sweepEntry
	kick    chan struct{}
}

func newSweeper(c *Client) *sweeper {
	s := &sweeper{c: c, kick: make(chan struct{}, 1)}
	c.wg.Add(1)
	go s.loop()
	return s
}

// add schedules the release of a grant's value on every node.
func (s *sweeper) add(name, value string) {
	e := &sweepEntry{key: s.c.key(name), value: value, since: time.Now(), need: make([]int, len(s.c.nodes))}
	for i := range e.need {
		e.need[i] = sweepAnswers
	}
	s.mu.Lock()
	if len(s.pending) >= sweepMaxPending {
		s.pending = s.pending[1:]
	}
	s.pending = append(s.pending, e)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// loop runs a round every node timeout while anything is pending, until the Client closes.
func (s *sweeper) loop() {
	defer s.c.wg.Done()
	t := time.NewTicker(s.c.cfg.nodeTimeout)
	defer t.Stop()
	for {
		select {
		case <-s.c.done:
			return
		case <-s.kick:
			continue // the first round comes one tick after the failure: the release redsync sent is the first try
		case <-t.C:
		}
		s.round()
	}
}

// round sends each pending release once to every node that still owes answers; on a node that
// does not answer, it stops for this round (the node is down or stalled: the rest would wait too).
func (s *sweeper) round() {
	s.mu.Lock()
	now := time.Now()
	kept := s.pending[:0]
	for _, e := range s.pending {
		if now.Sub(e.since) < sweepMaxAge && !e.done() {
			kept = append(kept, e)
		}
	}
	clear(s.pending[len(kept):])
	s.pending = kept
	work := append([]*sweepEntry(nil), kept...)
	s.mu.Unlock()
	if len(work) == 0 {
		return
	}
	var wg sync.WaitGroup
	for i, n := range s.c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, e := range work {
				if e.need[i] == 0 {
					continue
				}
				_, err := bounded(context.Background(), s.c.cfg.nodeTimeout, func(ctx context.Context) (int64, error) {
					return releaseScript.Run(ctx, n, []string{e.key}, e.value).Int64()
				})
				if err != nil {
					return
				}
				e.need[i]-- // only this node's goroutine touches need[i]
			}
		}()
	}
	wg.Wait()
}

func (e *sweepEntry) done() bool {
	for _, n := range e.need {
		if n > 0 {
			return false
		}
	}
	return true
}
