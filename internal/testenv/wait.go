package testenv

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Waiting in tests. Everything a test waits for has a deadline and fails the test saying what
// did not happen: a wait without one hangs until go test's -timeout kills the whole binary
// (25 minutes in make test) with nothing but goroutine dumps to go on. Call these from the
// test's own goroutine (they call Fatalf).

// WaitFor checks cond every 10 ms until it holds; if it still does not once within has passed,
// the test fails with "not within <within>: <what>".
func WaitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Receive returns the next value from ch (the zero value once ch is closed); if none comes
// within, the test fails with "not within <within>: <what>".
func Receive[T any](tb testing.TB, ch <-chan T, within time.Duration, what string) T {
	tb.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		tb.Fatalf("not within %v: %s", within, what)
		var zero T
		return zero
	}
}

// Wait waits for wg; if it is not done within, the test fails with "not within <within>:
// <what>".
func Wait(tb testing.TB, wg *sync.WaitGroup, within time.Duration, what string) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	Receive(tb, done, within, what)
}

// Background runs fn in a goroutine until the test ends: its context is then cancelled, and fn
// must return within 10 s (what says what it is, for the failure).
func Background(tb testing.TB, what string, fn func(ctx context.Context)) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); fn(ctx) }()
	tb.Cleanup(func() {
		cancel()
		Receive(tb, done, 10*time.Second, what+" stops when its context ends")
	})
}
