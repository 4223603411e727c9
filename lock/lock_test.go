package lock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"couponsvc/internal/testenv"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) {
	if addrs := os.Getenv("LOCK_HELPER_ADDRS"); addrs != "" {
		holdAsHelper(addrs) // this process is the lock holder of a kill or pause test
		return
	}
	testenv.Main(m)
}

// Short leases keep the suite fast: the watchdog lease is 300ms, renewed every 100ms.
const (
	testLease = 300 * time.Millisecond
	testRenew = 100 * time.Millisecond
)

func fastOpts(extra ...Option) []Option {
	return append([]Option{WithWatchdogTimeout(testLease), WithRenewInterval(testRenew)}, extra...)
}

// newClient is one "process": its own node clients, pub/sub and local state.
func newClient(t *testing.T, nodes []*testenv.Redis, opts ...Option) *Client {
	t.Helper()
	c := New(NewNodes(testenv.Addrs(nodes), "", ""), opts...)
	t.Cleanup(func() { c.Close() })
	return c
}

func owned() context.Context { return WithOwner(context.Background(), NewOwner()) }

func mustLock(t *testing.T, ctx context.Context, m *Mutex, wait, lease time.Duration) {
	t.Helper()
	if err := m.TryLock(ctx, wait, lease); err != nil {
		t.Fatalf("TryLock %s: %v", m.Name(), err)
	}
}

func mustUnlock(t *testing.T, ctx context.Context, m *Mutex) {
	t.Helper()
	if err := m.Unlock(ctx); err != nil {
		t.Fatalf("Unlock %s: %v", m.Name(), err)
	}
}

func queueLen(c *Client, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.locks[name]; st != nil {
		return len(st.queue)
	}
	return 0
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Three "processes" (clients with their own connections) x 200 goroutines increment a plain
// read-then-write counter under the lock: any overlap of critical sections loses an increment.
// Fencing tokens must rise with every grant, across clients.
func TestMutualExclusionAcrossClients(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	const clients, goroutines, rounds = 3, 200, 2
	var (
		counter   atomic.Int64 // read and written separately: not an atomic increment
		inside    atomic.Int32
		lastToken atomic.Int64
		wg        sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range clients {
		m := newClient(t, nodes).Mutex("counter")
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				octx := WithOwner(ctx, NewOwner())
				for range rounds {
					if err := m.Lock(octx); err != nil {
						t.Error(err)
						return
					}
					if n := inside.Add(1); n != 1 {
						t.Errorf("%d holders at once", n)
					}
					tok, ok := m.Fence(octx)
					if !ok || tok <= lastToken.Load() {
						t.Errorf("token %d (held %v) not above previous %d", tok, ok, lastToken.Load())
					}
					lastToken.Store(tok)
					v := counter.Load()
					runtime.Gosched()
					counter.Store(v + 1)
					inside.Add(-1)
					if err := m.Unlock(octx); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	testenv.Wait(t, &wg, 70*time.Second, fmt.Sprintf("%d goroutines end their %d rounds of Lock and Unlock", clients*goroutines, rounds))
	if got, want := counter.Load(), int64(clients*goroutines*rounds); got != want {
		t.Fatalf("counter = %d, want %d", got, want)
	}
}

// A critical section three leases long stays exclusive: the watchdog renews the lease.
func TestWatchdogKeepsLongCriticalSection(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	a := newClient(t, nodes, fastOpts()...).Mutex("long")
	b := newClient(t, nodes, fastOpts()...).Mutex("long")
	actx, bctx := owned(), owned()
	mustLock(t, actx, a, 0, 0)
	end := time.Now().Add(3*testLease + 100*time.Millisecond)
	for time.Now().Before(end) {
		if err := b.TryLock(bctx, 0, 0); !errors.Is(err, ErrTimeout) {
			t.Fatalf("other client during the critical section: %v, want ErrTimeout", err)
		}
		if closed(a.Lost(actx)) {
			t.Fatal("holder told lost while renewing")
		}
		time.Sleep(30 * time.Millisecond)
	}
	if left, err := a.RemainingLease(actx); err != nil || left <= 0 || left > testLease {
		t.Fatalf("RemainingLease = %v, %v; want within (0, %v]", left, err, testLease)
	}
	mustUnlock(t, actx, a)
	mustLock(t, bctx, b, time.Second, 0)
	mustUnlock(t, bctx, b)
}

// A holder whose client closes without unlocking (a process that stops renewing) frees the lock
// within one lease, not at once (nothing was released) and not later.
func TestStoppedHolderFreesWithinLease(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	ac := newClient(t, nodes, fastOpts()...)
	a := ac.Mutex("abandoned")
	b := newClient(t, nodes, fastOpts()...).Mutex("abandoned")
	actx, bctx := owned(), owned()
	mustLock(t, actx, a, 0, 0)
	lost := a.Lost(actx)
	if err := ac.Close(); err != nil {
		t.Fatal(err)
	}
	if !closed(lost) {
		t.Fatal("Lost not closed by Close")
	}
	start := time.Now()
	mustLock(t, bctx, b, 3*time.Second, 0)
	took := time.Since(start)
	if took < testLease/3 || took > testLease+700*time.Millisecond {
		t.Fatalf("lock freed after %v, want about one lease (%v)", took, testLease)
	}
	if err := a.Unlock(actx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Unlock after Close: %v, want ErrLockLost", err)
	}
}

// The helper process for TestKilledHolderFreesWithinLease: it takes the lock and holds it until
// killed.
// holdAsHelper takes the lock "held" in watchdog mode and reports on stdout: HOLDING once it
// holds it, then LOST when its watchdog finds the lock gone, then the result of its Unlock.
func holdAsHelper(addrs string) {
	c := New(NewNodes(strings.Split(addrs, ","), "", ""), fastOpts()...)
	ctx := owned()
	m := c.Mutex("held")
	if err := m.Lock(ctx); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("HOLDING")
	select {
	case <-m.Lost(ctx):
		fmt.Println("LOST")
		fmt.Println("UNLOCK", errors.Is(m.Unlock(ctx), ErrLockLost))
	case <-time.After(time.Minute):
	}
	os.Exit(0)
}

// startHolder runs the test binary as a separate process holding the lock "held".
func startHolder(t *testing.T, nodes []*testenv.Redis) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LOCK_HELPER_ADDRS="+strings.Join(testenv.Addrs(nodes), ","))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		testenv.Receive(t, exited, 10*time.Second, "the lock holder process exits after SIGKILL")
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if l != "HOLDING" {
			t.Fatalf("holder process: %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("holder process did not take the lock")
	}
	return cmd, lines
}

// A process holding the lock is SIGKILLed: while it lived its watchdog kept the lock, and once
// dead the lease frees the lock within one lease.
func TestKilledHolderFreesWithinLease(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	cmd, _ := startHolder(t, nodes)

	b := newClient(t, nodes, fastOpts()...).Mutex("held")
	bctx := owned()
	for range 3 { // three leases while the helper lives: its watchdog renews
		if err := b.TryLock(bctx, testLease, 0); !errors.Is(err, ErrTimeout) {
			t.Fatalf("while the holder lives: %v, want ErrTimeout", err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mustLock(t, bctx, b, 3*time.Second, 0)
	if took := time.Since(start); took > testLease+700*time.Millisecond {
		t.Fatalf("lock freed %v after the kill, want within one lease (%v)", took, testLease)
	}
	mustUnlock(t, bctx, b)
}

// A holder process frozen (SIGSTOP) stops renewing: the lock frees within one lease and
// another holder proceeds. When the frozen one resumes, its watchdog finds the lock lost at
// once (Lost closes) and its Unlock returns ErrLockLost: it never carries on unknowing.
func TestPausedHolderFreesWithinLeaseAndLearnsItLost(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	cmd, lines := startHolder(t, nodes)
	b := newClient(t, nodes, fastOpts()...).Mutex("held")
	bctx := owned()
	if err := b.TryLock(bctx, testLease, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("while the holder runs: %v, want ErrTimeout", err)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mustLock(t, bctx, b, 3*time.Second, 0)
	if took := time.Since(start); took > testLease+700*time.Millisecond {
		t.Fatalf("lock freed %v after the pause, want within one lease (%v)", took, testLease)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LOST", "UNLOCK true"} {
		select {
		case l := <-lines:
			if l != want {
				t.Fatalf("resumed holder said %q, want %q", l, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("resumed holder did not say %q", want)
		}
	}
	if !b.IsHeldByCurrent(bctx) {
		t.Fatal("the new holder lost the lock to the resumed one")
	}
	mustUnlock(t, bctx, b)
}

// With 3 nodes: one down, locks work; two down, acquisition fails fast with ErrUnavailable
// (well before the wait, even with a long deadline); nodes back, it recovers.
func TestNodeFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		down, back func(*testenv.Redis, testing.TB)
	}{
		{"stopped", (*testenv.Redis).Stop, (*testenv.Redis).Start},
		{"paused", (*testenv.Redis).Pause, (*testenv.Redis).Resume},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := testenv.NewRedisNodes(t, 3)
			c := newClient(t, nodes, fastOpts()...)
			m := c.Mutex("faults")
			ctx := owned()
			lockUnlock := func(what string) {
				t.Helper()
				if err := m.TryLock(ctx, 2*time.Second, 0); err != nil {
					t.Fatalf("%s: TryLock: %v", what, err)
				}
				if _, ok := m.Fence(ctx); !ok {
					t.Fatalf("%s: no fencing token", what)
				}
				if err := m.Unlock(ctx); err != nil {
					t.Fatalf("%s: Unlock: %v", what, err)
				}
			}
			lockUnlock("all nodes up")

			tc.down(nodes[0], t)
			for range 5 {
				lockUnlock("one node down")
			}
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("Ping with one node down: %v", err)
			}

			tc.down(nodes[1], t)
			dctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			for _, acquire := range []func() error{
				func() error { return m.TryLock(dctx, 10*time.Second, 0) },
				func() error { return m.Lock(dctx) },
			} {
				start := time.Now()
				err := acquire()
				if took := time.Since(start); !errors.Is(err, ErrUnavailable) || took > time.Second {
					t.Fatalf("two nodes down: %v after %v, want ErrUnavailable well under the wait", err, took)
				}
			}
			if _, err := m.IsLocked(ctx); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("IsLocked with two nodes down: %v, want ErrUnavailable", err)
			}
			if err := c.Ping(ctx); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Ping with two nodes down: %v, want ErrUnavailable", err)
			}

			tc.back(nodes[0], t)
			tc.back(nodes[1], t)
			testenv.WaitFor(t, 5*time.Second, "lock works again after the nodes return", func() bool {
				if err := m.TryLock(ctx, 500*time.Millisecond, 0); err != nil {
					return false
				}
				return m.Unlock(ctx) == nil
			})
			lockUnlock("nodes back")
		})
	}
}

// starved makes a node client behave as in a process starved of CPU while on is set: a SET
// reaches the node (the key is set) but its reply is taken only after the node timeout, and a
// script (redsync's release) is not sent before its deadline passes.
type starved struct{ on atomic.Bool }

func (s *starved) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s *starved) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (s *starved) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !s.on.Load() {
			return next(ctx, cmd)
		}
		switch cmd.Name() {
		case "set":
			err := next(ctx, cmd)
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // the reply comes well after the caller gave up
			return err
		case "evalsha", "eval":
			<-ctx.Done()
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		return next(ctx, cmd)
	}
}

// An attempt whose SETs land on the nodes but whose replies come after the node timeout (a
// process starved of CPU) fails, and redsync's release of its value, with the same short time,
// does not land either: the value left on the nodes must not hold the lock for the whole
// watchdog lease (30s) with nobody holding it.
func TestFailedAttemptLeavesNoLockBehind(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	clients := NewNodes(testenv.Addrs(nodes), "", "")
	starve := &starved{}
	for _, n := range clients {
		n.AddHook(starve)
	}
	c := New(clients) // the service's settings: 30s watchdog lease, 100ms node timeout
	t.Cleanup(func() { c.Close() })
	m := c.Mutex("starved")
	ctx := owned()

	starve.on.Store(true)
	err := m.TryLock(ctx, 0, 0)
	starve.on.Store(false)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("attempt with every reply late: %v, want ErrUnavailable", err)
	}
	// The value left on the nodes is dropped by the sweeper (which sends the release again)
	// or by the next attempt of this client (freeIn): either way the lock is free at once.
	start := time.Now()
	if err := m.TryLock(ctx, 2*time.Second, 0); err != nil {
		t.Fatalf("the next TryLock: %v after %v; the failed attempt's own value holds the lock", err, time.Since(start))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the next TryLock took %v: the failed attempt's value held the lock meanwhile", took)
	}
	mustUnlock(t, ctx, m)
	other := newClient(t, nodes).Mutex("starved")
	octx := owned()
	mustLock(t, octx, other, time.Second, 0)
	mustUnlock(t, octx, other)
}

// Reentrancy, hold count, owner-only unlock and introspection; one node is Redlock's
// degenerate case.
func TestReentrancyOwnershipIntrospection(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 1)
	c := newClient(t, nodes, fastOpts()...)
	m := c.Mutex("reentrant")
	me, other := owned(), owned()

	if err := m.Lock(context.Background()); !errors.Is(err, ErrNoOwner) {
		t.Fatalf("Lock without owner: %v, want ErrNoOwner", err)
	}
	if err := m.Unlock(context.Background()); !errors.Is(err, ErrNoOwner) {
		t.Fatalf("Unlock without owner: %v, want ErrNoOwner", err)
	}
	if locked, err := m.IsLocked(me); err != nil || locked {
		t.Fatalf("IsLocked before any lock: %v, %v", locked, err)
	}

	mustLock(t, me, m, 0, 0)
	tok, _ := m.Fence(me)
	mustLock(t, me, m, 0, 0)
	if err := m.Lock(me); err != nil {
		t.Fatal(err)
	}
	if n := m.HoldCount(me); n != 3 {
		t.Fatalf("HoldCount = %d, want 3", n)
	}
	if tok2, _ := m.Fence(me); tok2 != tok {
		t.Fatalf("reentry changed the token: %d -> %d", tok, tok2)
	}
	if !m.IsHeldByCurrent(me) || m.IsHeldByCurrent(other) {
		t.Fatal("IsHeldByCurrent wrong")
	}
	if err := m.Unlock(other); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Unlock by another owner: %v, want ErrNotOwner", err)
	}
	if n := m.HoldCount(me); n != 3 {
		t.Fatalf("ErrNotOwner changed the hold count to %d", n)
	}
	if err := m.TryLock(other, 0, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("TryLock by another owner: %v, want ErrTimeout", err)
	}
	if m.HoldCount(other) != 0 || !closed(m.Lost(other)) {
		t.Fatal("another owner sees a hold")
	}

	mustUnlock(t, me, m)
	mustUnlock(t, me, m)
	if locked, err := m.IsLocked(other); err != nil || !locked {
		t.Fatalf("IsLocked at hold count 1: %v, %v", locked, err)
	}
	lost := m.Lost(me)
	if closed(lost) {
		t.Fatal("Lost closed while held")
	}
	mustUnlock(t, me, m)
	if !closed(lost) {
		t.Fatal("Lost not closed by the final Unlock")
	}
	if locked, err := m.IsLocked(other); err != nil || locked {
		t.Fatalf("IsLocked after the final Unlock: %v, %v", locked, err)
	}
	if left, err := m.RemainingLease(other); err != nil || left != 0 {
		t.Fatalf("RemainingLease when free = %v, %v", left, err)
	}
	if err := m.Unlock(me); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Unlock past zero: %v, want ErrNotOwner", err)
	}
	mustLock(t, other, m, 0, 0)
	mustUnlock(t, other, m)
}

// A fixed lease is not renewed: Lost closes when it runs out, others get the lock, and the late
// Unlock returns ErrLockLost.
func TestFixedLeaseRunsOut(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	a := newClient(t, nodes, fastOpts()...).Mutex("fixed")
	b := newClient(t, nodes, fastOpts()...).Mutex("fixed")
	actx, bctx := owned(), owned()
	const lease = 400 * time.Millisecond
	start := time.Now()
	mustLock(t, actx, a, 0, lease)
	if left, err := a.RemainingLease(actx); err != nil || left <= 0 || left > lease {
		t.Fatalf("RemainingLease = %v, %v; want within (0, %v]", left, err, lease)
	}
	select {
	case <-a.Lost(actx):
	case <-time.After(lease + time.Second):
		t.Fatal("Lost not closed after the fixed lease")
	}
	if took := time.Since(start); took < lease/2 {
		t.Fatalf("Lost closed after %v, lease is %v", took, lease)
	}
	if a.IsHeldByCurrent(actx) {
		t.Fatal("still held by current after the lease")
	}
	wctx, cancel := context.WithTimeout(bctx, 2*time.Second)
	defer cancel()
	mustLock(t, wctx, b, -1, 0) // a negative wait lasts until ctx ends
	if err := a.Unlock(actx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("late Unlock: %v, want ErrLockLost", err)
	}
	if err := a.Unlock(actx); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("second late Unlock: %v, want ErrNotOwner", err)
	}
	if !b.IsHeldByCurrent(bctx) {
		t.Fatal("the late Unlock disturbed the new holder")
	}
	mustUnlock(t, bctx, b)
}

// When renewal finds the key gone (a node flushed, an operator deleting it), the holder is told
// at once through Lost, and Unlock reports ErrLockLost.
func TestWatchdogReportsLostLock(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 1)
	c := newClient(t, nodes, fastOpts()...)
	m := c.Mutex("vanishing")
	ctx := owned()
	mustLock(t, ctx, m, 0, 0)
	if err := nodes[0].Client(t).Del(context.Background(), "lock:vanishing").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Lost(ctx):
	case <-time.After(testRenew + time.Second):
		t.Fatal("Lost not closed after the key vanished")
	}
	if err := m.Unlock(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Unlock: %v, want ErrLockLost", err)
	}
}

// Tokens rise strictly with every grant across clients, reentry keeps the token, and
// AdvanceFence lifts the counter (never lowers it).
func TestFencing(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	a := newClient(t, nodes, fastOpts()...)
	b := newClient(t, nodes, fastOpts()...)
	ctx := owned()
	var last int64
	grant := func(c *Client) int64 {
		t.Helper()
		m := c.Mutex("fenced")
		mustLock(t, ctx, m, time.Second, 0)
		tok, ok := m.Fence(ctx)
		mustUnlock(t, ctx, m)
		if !ok || tok <= last {
			t.Fatalf("token %d (held %v), previous %d", tok, ok, last)
		}
		last = tok
		return tok
	}
	for i := range 6 {
		grant([]*Client{a, b}[i%2])
	}
	if _, ok := a.Mutex("fenced").Fence(ctx); ok {
		t.Fatal("Fence reports a token without a hold")
	}
	if err := a.AdvanceFence(ctx, "fenced", 1000); err != nil {
		t.Fatal(err)
	}
	if tok := grant(b); tok != 1001 {
		t.Fatalf("token after AdvanceFence(1000) = %d, want 1001", tok)
	}
	if err := b.AdvanceFence(ctx, "fenced", 5); err != nil {
		t.Fatal(err)
	}
	if tok := grant(a); tok != 1002 {
		t.Fatalf("AdvanceFence lowered the counter: token %d, want 1002", tok)
	}
}

// Waiters of one process are granted in arrival order.
func TestLocalFIFO(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	c := newClient(t, nodes, fastOpts()...)
	m := c.Mutex("fifo")
	holder := owned()
	mustLock(t, holder, m, 0, 0)
	const n = 20
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := owned()
			if err := m.TryLock(ctx, 20*time.Second, 0); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			if err := m.Unlock(ctx); err != nil {
				t.Error(err)
			}
		}()
		testenv.WaitFor(t, 2*time.Second, "waiter queued", func() bool { return queueLen(c, "fifo") == i+1 })
	}
	mustUnlock(t, holder, m)
	testenv.Wait(t, &wg, 25*time.Second, fmt.Sprintf("the %d queued waiters are granted and unlock", n))
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order %v, want arrival order", order)
		}
	}
	if len(order) != n {
		t.Fatalf("%d of %d waiters granted", len(order), n)
	}
}

// A crowd in one process costs Redis one waiter, woken by the release message (not by
// polling: the fallback is set far beyond the test).
func TestOneContenderPerProcessWokenByRelease(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	holderC := newClient(t, nodes) // 30s watchdog lease: the crowd may only learn of the release by message
	crowdC := newClient(t, nodes, fastOpts(WithFallbackRetry(10*time.Second))...)
	holder := holderC.Mutex("crowd")
	hctx := owned()
	mustLock(t, hctx, holder, 0, 0)

	const n = 50
	granted := make(chan time.Time, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := owned()
			m := crowdC.Mutex("crowd")
			if err := m.TryLock(ctx, 20*time.Second, 0); err != nil {
				t.Error(err)
				return
			}
			granted <- time.Now()
			if err := m.Unlock(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	testenv.WaitFor(t, 2*time.Second, "crowd queued", func() bool { return queueLen(crowdC, "crowd") == n })
	time.Sleep(time.Second)
	if got := crowdC.attempts.Load(); got > 3 {
		t.Fatalf("%d acquisition attempts from a crowd of %d while the lock was held, want one waiter's few", got, n)
	}
	released := time.Now()
	mustUnlock(t, hctx, holder)
	first := testenv.Receive(t, granted, 25*time.Second, "a waiter of the crowd is granted after the release")
	if d := first.Sub(released); d > time.Second {
		t.Fatalf("first waiter granted %v after the release: not woken by the release message", d)
	}
	testenv.Wait(t, &wg, 25*time.Second, fmt.Sprintf("the crowd of %d is granted in turn and unlocks", n))
	if got := crowdC.attempts.Load(); got > 2*n {
		t.Fatalf("%d attempts for %d grants", got, n)
	}
}

// A release whose message is lost (the key deleted without a publish) strands no one: the
// bounded fallback retry finds the lock free.
func TestFallbackRetryWithoutMessage(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 1)
	raw := nodes[0].Client(t)
	bg := context.Background()
	if err := raw.Set(bg, "lock:silent", "someone-else", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, nodes, fastOpts(WithFallbackRetry(200*time.Millisecond))...)
	m := c.Mutex("silent")
	ctx := owned()
	done := make(chan error, 1)
	go func() { done <- m.TryLock(ctx, 10*time.Second, 0) }()
	time.Sleep(500 * time.Millisecond)
	if err := raw.Del(bg, "lock:silent").Err(); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("waiter stranded after a release without a message")
	}
	if took := time.Since(deleted); took > time.Second {
		t.Fatalf("granted %v after the silent release, fallback is 200ms", took)
	}
	// About one attempt per fallback period, not a busy poll.
	if got := c.attempts.Load(); got > 10 {
		t.Fatalf("%d attempts in ~0.5s with a 200ms fallback", got)
	}
	mustUnlock(t, ctx, m)
}

// A context deadline is a timeout too; cancellation is reported as such.
func TestContextEndsWait(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 1)
	c := newClient(t, nodes, fastOpts()...)
	m := c.Mutex("ctx")
	holder := owned()
	mustLock(t, holder, m, 0, 0)
	dctx, cancel := context.WithTimeout(owned(), 200*time.Millisecond)
	defer cancel()
	if err := m.Lock(dctx); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock past the deadline: %v", err)
	}
	cctx, cancel2 := context.WithCancel(owned())
	time.AfterFunc(100*time.Millisecond, cancel2)
	if err := m.Lock(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock cancelled: %v", err)
	}
	if err := m.TryLock(owned(), 300*time.Millisecond, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("TryLock past the wait: %v", err)
	}
	if n := queueLen(c, "ctx"); n != 0 {
		t.Fatalf("%d waiters left in the queue", n)
	}
	mustUnlock(t, holder, m)
}

// A fencing counter written by something else (the largest int64, or not a number) does not
// stop the lock: the next grant gets a token, and tokens keep growing from there.
func TestForgedFenceCounterIsOverwritten(t *testing.T) {
	nodes := testenv.NewRedisNodes(t, 3)
	c := newClient(t, nodes)
	ctx := WithOwner(context.Background(), NewOwner())
	m := c.Mutex("forged")
	key := c.fenceKey("forged")
	for i, n := range nodes {
		v := "9223372036854775807"
		if i == 2 {
			v = "not a number"
		}
		if err := redis.NewClient(&redis.Options{Addr: n.Addr}).Set(ctx, key, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var last int64
	for range 3 {
		if err := m.TryLock(ctx, time.Second, 0); err != nil {
			t.Fatalf("lock with a forged fencing counter: %v", err)
		}
		token, ok := m.Fence(ctx)
		if !ok || token <= last || token > MaxFence {
			t.Fatalf("token %d after %d (ok %v)", token, last, ok)
		}
		last = token
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AdvanceFence(ctx, "forged", math.MaxInt64); err == nil {
		t.Error("AdvanceFence to the largest int64 accepted")
	}
}
