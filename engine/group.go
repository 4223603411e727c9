package engine

import "sync"

// grouper runs its function on the items added to it, in groups: at most max calls at once,
// each on everything pending when it starts (at most limit items; 0: no limit). An item that
// finds a call free starts one at once, alone; the others wait for the next free call and share
// it. The issue transactions (commit.go) and the calls to another instance (forward.go) are
// grouped so.
type grouper[T any] struct {
	max, limit int
	run        func([]T)

	mu      sync.Mutex
	pending []T
	running int
}

func (g *grouper[T]) add(item T) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending = append(g.pending, item)
	if g.running < g.max {
		g.running++
		go g.loop()
	}
}

// idle reports whether nothing is pending or running.
func (g *grouper[T]) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running == 0 && len(g.pending) == 0
}

// loop runs groups while items are pending.
func (g *grouper[T]) loop() {
	for {
		g.mu.Lock()
		n := len(g.pending)
		if n == 0 {
			g.running--
			g.mu.Unlock()
			return
		}
		if g.limit > 0 {
			n = min(n, g.limit)
		}
		group := append([]T(nil), g.pending[:n]...)
		rest := copy(g.pending, g.pending[n:])
		clear(g.pending[rest:])
		g.pending = g.pending[:rest]
		g.mu.Unlock()
		g.run(group)
	}
}
