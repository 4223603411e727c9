// Package lock is a distributed, reentrant lock with the semantics of Redisson's RLock, built on
// redsync's Redlock over independent Redis nodes (a grant needs a quorum of N/2+1 nodes, drift
// factor 0.01), with an etcd-concurrency-style API: every call takes a ctx, whose owner (set by
// WithOwner) plays the role of Redisson's thread id, and returns sentinel errors (ErrTimeout,
// ErrUnavailable, ErrNotOwner, ErrLockLost, ErrNoOwner, ErrClosed).
//
// A Client (one per process: New(NewNodes(addrs, username, password), opts...)) owns the node clients, one
// shared pub/sub connection per node and the process-local state of every lock; a Mutex is a
// cheap handle naming one lock:
//
//	ctx = lock.WithOwner(ctx, lock.NewOwner())
//	m := client.Mutex("coupon:" + code)
//	if err := m.TryLock(ctx, wait, 0); err != nil { ... } // ErrTimeout, ErrUnavailable
//	defer m.Unlock(ctx)
//	token, _ := m.Fence(ctx) // pass to the storage that must refuse stale holders
//	select { case <-m.Lost(ctx): ...abort... default: }
//
// # Redisson's RLock, call by call
//
//   - lock(), lockInterruptibly(): m.Lock(ctx) waits until acquired or ctx ends (watchdog lease).
//   - lock(leaseTime, unit): m.TryLock(ctx, -1, lease); a negative wait lasts until ctx ends.
//   - tryLock(): m.TryLock(ctx, 0, 0), one attempt.
//   - tryLock(wait, lease, unit): m.TryLock(ctx, wait, lease); lease 0 is the watchdog.
//   - unlock(), IllegalMonitorStateException: m.Unlock(ctx) returns ErrNotOwner (nothing
//     changes), or ErrLockLost after a lost or expired grant.
//   - isLocked(): m.IsLocked(ctx), a quorum of nodes has the key.
//   - isHeldByCurrentThread(), getHoldCount(), remainTimeToLive(): m.IsHeldByCurrent(ctx),
//     m.HoldCount(ctx), m.RemainingLease(ctx) (0 when free).
//   - forceUnlock(): not provided; only an owner unlocks, and a lease always frees a dead holder.
//   - RFencedLock.getToken(), lockAndGetToken(): m.Fence(ctx) after a lock;
//     c.AdvanceFence(ctx, name, atLeast) when the storage refused a token as stale.
//   - the watchdog's lost-lock log line: m.Lost(ctx), a channel closed the moment the grant is
//     lost or ends.
//   - Config.setLockWatchdogTimeout(ms): WithWatchdogTimeout(d), default 1.5 s.
//   - (who holds a lock, e.g. to redirect to it): WithHolderInfo(addr) on the holder's client,
//     m.Holder(ctx) anywhere else.
//
// # Why the watchdog lease is 1.5 s, not Redisson's 30 s
//
// A holder that dies (SIGKILL, OOM, eviction) keeps its lock until the lease runs out, and in a
// flash crowd every process waits for it: with 30 s, a killed pod cost a third of a crowd's
// answers. 1.5 s frees a dead holder's locks within 2 s. A live holder renews every 500 ms (a
// third of the lease), so it loses the lock only after about a second without a successful
// renewal: two failed renewals in a row, or a stall a thousand times longer than a Go GC pause;
// and if it does, Lost closes and the storage's fencing check refuses its late writes. Choose a
// longer lease for nodes across a slow WAN. An acquisition or release that a node did not answer
// is swept: the release is sent again until every node has answered it, so a node that was
// frozen and runs a buffered SET NX when it resumes leaves no key behind for a whole lease.
//
// Other differences: a reentrant lock keeps its grant, lease and fencing token (Redisson's fenced
// lock increments on reentry); waiters of one process queue FIFO and only the head contends in
// Redis, woken by a release published on every node, with a fallback retry of min(remaining
// lease, 500 ms); ErrUnavailable comes within about the node timeout when fewer than a quorum of
// nodes answer; a stalled (not refusing) node adds one node timeout to each acquisition.
//
// # Fencing limits
//
// Tokens come from a quorum read-then-raise of a counter per lock (proof in fence.go): every
// grant's token exceeds every earlier grant's as long as the nodes keep their data. A node
// restarting empty can, together with a node that missed the last raise, hand out a token not
// above an earlier one; all nodes restarting empty restart the tokens at 1. Redlock's exclusion
// has the same weakness. So the storage must refuse a write whose token is lower than the last
// it accepted; on such a refusal, call AdvanceFence(ctx, name, accepted) and retry with a new
// grant. The lock serialises and keeps the storage calm; the storage keeps the invariants.
//
// Benchmark: go run ./lock/cmd/lockbench [-goroutines 200 -duration 5s -hold 0] (it starts three
// redis-servers).
package lock
