package service

import (
	"testing"
	"time"
)

func TestLagWindow(t *testing.T) {
	var w lagWindow
	t0 := time.Now()
	if got := w.recent(t0); got != 0 {
		t.Fatalf("nothing observed: %v", got)
	}
	w.observe(t0, 3*time.Millisecond)
	w.observe(t0.Add(time.Millisecond), 9*time.Millisecond)
	w.observe(t0.Add(2*time.Millisecond), 4*time.Millisecond)
	if got := w.recent(t0.Add(3 * time.Millisecond)); got != 9*time.Millisecond {
		t.Fatalf("recent = %v, want the longest, 9ms", got)
	}
	// The next window still remembers the previous one's longest...
	t1 := t0.Add(lagSpan + 10*time.Millisecond)
	w.observe(t1, time.Millisecond)
	if got := w.recent(t1); got != 9*time.Millisecond {
		t.Fatalf("one window later: %v, want 9ms", got)
	}
	// ...the one after forgets it...
	t2 := t1.Add(lagSpan + 10*time.Millisecond)
	w.observe(t2, 2*time.Millisecond)
	if got := w.recent(t2); got != 2*time.Millisecond {
		t.Fatalf("two windows later: %v, want 2ms", got)
	}
	// ...and an idle process has no lag.
	if got := w.recent(t2.Add(3 * lagSpan)); got != 0 {
		t.Fatalf("idle: %v, want 0", got)
	}
}
