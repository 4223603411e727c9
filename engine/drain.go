package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"time"

	"couponsvc/lock"
)

// drain serves the coupon's queue until it is empty: as the coupon's owner under its lock, or
// by forwarding the queue to the instance that owns it (see forward.go).
func (s *Engine) drain(st *couponState) {
	defer s.drainers.Done()
	name := lockName(st.coupon.Code)
	m := s.locks.Mutex(name)
	ctx := lock.WithOwner(context.Background(), lock.NewOwner())
	cluster := s.cfg.Peers != nil
	var unavailableSince time.Time
	for {
		st.mu.Lock()
		st.queue = s.expire(st.queue, time.Now())
		s.bounceLocked(st) // this instance does not own the coupon now
		if len(st.queue) == 0 {
			st.draining = false
			st.mu.Unlock()
			return
		}
		wait := max(time.Until(st.queue[0].deadline), 0)
		owner := st.ownerAddr
		st.mu.Unlock()

		if owner != "" {
			s.forward(st, owner, false)
			continue
		}
		// Alone, wait for the lock as long as the head of the queue may; in a cluster, make
		// one attempt and otherwise look for the owner to forward to.
		try := wait
		if cluster {
			try = 0
		}
		waitStart := time.Now()
		// While acquiring, batches forwarded here are taken in: another instance may read this
		// one's grant in Redis before own() begins (they are bounced if the lock is not won).
		st.mu.Lock()
		st.acquiring = cluster
		st.mu.Unlock()
		err := m.TryLock(ctx, try, s.cfg.LockLease)
		found := false
		if cluster && errors.Is(err, lock.ErrTimeout) {
			if found = s.learnOwner(ctx, st, m); !found {
				err = m.TryLock(ctx, min(wait, ownerPoll), s.cfg.LockLease)
			}
		}
		if err != nil {
			st.mu.Lock()
			st.acquiring = false
			st.mu.Unlock()
		}
		if found {
			continue // forward to the owner
		}
		s.metrics.LockWait.Observe(time.Since(waitStart).Seconds())
		switch {
		case errors.Is(err, lock.ErrTimeout):
			continue // the head's deadline passed (expire() answers it next round), or look again
		case errors.Is(err, lock.ErrUnavailable):
			// Cut off from the quorum: the owner may still be found on the nodes this
			// instance reaches, or another instance may serve the queue (relay).
			if cluster && (s.learnOwner(ctx, st, m) || s.relay(st)) {
				unavailableSince = time.Time{}
				continue
			}
			// A first miss of the quorum may be one slow answer on a loaded machine: keep
			// trying for a moment before failing the whole queue.
			if unavailableSince.IsZero() {
				unavailableSince = waitStart
			}
			if time.Since(unavailableSince) < unavailableGrace {
				time.Sleep(unavailableGrace / 5)
				continue
			}
			unavailableSince = time.Time{}
			s.failAll(st, fmt.Errorf("lock %s: %w: %w", name, domain.ErrUnavailable, err))
			continue
		case err != nil:
			// The lock client is closing: nothing more can be issued here.
			s.failAll(st, fmt.Errorf("lock %s: %w: %w", name, domain.ErrUnavailable, err))
			continue
		}
		unavailableSince = time.Time{}
		s.own(ctx, st, m, s.traceGrant(ctx, st.coupon.Code, m, waitStart))
	}
}

// own runs batches under one grant of the coupon's lock. Alone, it keeps the grant while
// requests keep coming, for at most keepGrant: acquiring a grant and its fencing token costs
// three sequential quorum round trips, which under a crowd took as long as the batch's
// transaction. In a cluster this instance is the coupon's owner: the others forward their
// requests to it, so it keeps the grant while requests keep coming and ownerLinger after the
// last, and lets go when a batch fails, the grant is lost or the service drains.
func (s *Engine) own(ctx context.Context, st *couponState, m Mutex, g grant) {
	held := time.Now()
	lost := m.Lost(ctx)
	cluster := s.cfg.Peers != nil
	st.mu.Lock()
	st.owner, st.acquiring = cluster, false
	st.ownerAddr = ""
	st.mu.Unlock()
	lastWork := held
	linger := time.NewTimer(ownerLinger)
	defer linger.Stop()
	for {
		ran, good := s.runBatch(ctx, st, m, g)
		if ran && !good {
			break
		}
		if ran {
			lastWork = time.Now()
		}
		if isClosed(lost) || (!cluster && time.Since(held) >= keepGrant) {
			break
		}
		st.mu.Lock()
		st.queue = s.expire(st.queue, time.Now())
		if len(st.queue) > 0 {
			st.mu.Unlock()
			continue
		}
		idle := time.Since(lastWork)
		if !cluster || s.draining.Load() || idle >= ownerLinger {
			st.owner = false // from here on, forwarded batches are refused
			st.mu.Unlock()
			break
		}
		st.mu.Unlock()
		linger.Reset(ownerLinger - idle)
		select {
		case <-st.more:
		case <-linger.C:
		case <-lost:
		}
	}
	st.mu.Lock()
	st.owner = false
	st.mu.Unlock()
	s.unlock(ctx, m)
	s.metrics.LockHold.Observe(time.Since(held).Seconds())
}

// unlock releases the lock; a lost lock is logged (PostgreSQL's fencing and constraints kept the
// batch right).
func (s *Engine) unlock(ctx context.Context, m Mutex) {
	uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := m.Unlock(uctx); err != nil {
		s.log.Warn("unlock", "err", err)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func lockName(code string) string { return "coupon:" + code }

// keepGrant is the longest one grant of a coupon's lock is kept for back-to-back batches.
const keepGrant = 100 * time.Millisecond

// ownerLinger is how long the owner of a coupon keeps its lock after the last request, so that
// a crowd's pauses do not move the ownership (and the forwarding) between instances.
const ownerLinger = 500 * time.Millisecond

// ownerPoll bounds one wait for a coupon's lock when another instance holds it, so that a new
// owner is found (and forwarded to) soon after it takes over.
const ownerPoll = 100 * time.Millisecond

// unavailableGrace is how long the drainer keeps trying to reach a Redis quorum before it
// answers the queue 503 UNAVAILABLE: long enough to ride out one slow answer, far shorter than
// LOCK_WAIT, so nobody waits out the lock wait when the quorum is really gone.
const unavailableGrace = 500 * time.Millisecond
