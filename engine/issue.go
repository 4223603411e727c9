package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
)

// The issue path, with group commit.
//
// A request is answered from facts PostgreSQL committed when they decide it (the user holds the
// coupon; the coupon is sold out), without the lock. Otherwise it joins its coupon's queue in
// this instance, in arrival order. One goroutine per coupon (the drainer) takes the coupon's
// distributed lock, takes up to MaxBatch requests off the front of the queue, issues them in ONE
// PostgreSQL transaction under the grant's fencing token (duplicates and the stock boundary
// resolved in arrival order), releases the lock and answers each request. Requests that arrive
// meanwhile form the next batch. So one lock acquisition and one commit serve a whole crowd, and
// across instances the lock still serialises the batches.
//
// This file is the queue (a request's way in and its answer); drain.go owns the coupon or
// forwards its queue (forward.go); batch.go takes, writes and answers a batch.

// couponState is one coupon's cache of committed facts and its queue of waiting requests.
type couponState struct {
	coupon domain.Coupon          // ID, code, name, discount and validity (fixed); its other fields are not kept current
	window atomic.Pointer[window] // issuing window, refreshed (see apply)

	mu       sync.Mutex
	holders  map[uuid.UUID]struct{} // users known to hold this coupon (committed)
	soldOut  bool                   // a transaction found issued_quantity = total_quantity
	final    bool                   // sold out and holders is the complete set from PostgreSQL
	queue    []*issueRequest        // waiting requests, in arrival order
	draining bool                   // a drainer goroutine is running for this coupon
	total    int                    // total_quantity as last read from PostgreSQL
	// remaining estimates the stock left: read from PostgreSQL (at load, then every
	// MetaRefresh), lowered by this instance's batches. Only the boundary settle uses it.
	remaining int
	gen       uint64 // bumped when the stock changes: older sold-out findings are void
	// changes counts the changes of the coupon this instance made or heard of; a copy read
	// from PostgreSQL before the latest is not applied (see apply).
	changes atomic.Uint64

	// Between instances (see forward.go).
	owner      bool          // this instance holds the coupon's lock and serves forwarded requests
	acquiring  bool          // this instance is trying to take the lock (forwarded requests are taken in)
	ownerAddr  string        // the instance that owns the coupon elsewhere, as last learned
	misdirect  misdirected   // an address that recently said it is not the owner
	confirming bool          // a sold-out learned from the owner is being checked
	more       chan struct{} // a request joined the queue (capacity 1): wakes a lingering owner
}

// known answers from committed facts alone: domain.ErrAlreadyIssued for a known holder, domain.ErrSoldOut
// once the holder set is final, nil when only a transaction can tell. st.mu is held.
func (st *couponState) known(user uuid.UUID) error {
	if _, held := st.holders[user]; held {
		return domain.ErrAlreadyIssued
	}
	if st.final {
		return domain.ErrSoldOut
	}
	return nil
}

// issueRequest is one request waiting in a coupon's queue.
type issueRequest struct {
	ctx      context.Context
	user     uuid.UUID
	arrived  time.Time         // when the request reached the service: its place in the queue
	deadline time.Time         // past it while still queued, the answer is LOCK_TIMEOUT
	done     chan issueOutcome // buffered: the drainer never blocks on a request that left
	// state decides, once, whether the request goes into a batch (taken) or leaves the queue
	// unanswered by PostgreSQL (abandoned: timed out or its client went away). A request
	// answered LOCK_TIMEOUT can then never be issued afterwards.
	state atomic.Int32
	// forwarded: another instance sent it here because this one owns the coupon; if this one
	// stops owning it before it is issued, it goes back (errMisdirected). relayed: an instance
	// cut off from the Redis quorum handed it here to be served as if it had arrived here; it
	// is not relayed again.
	forwarded, relayed bool
	// wallet is the id of the row the request creates if issued, chosen where the request
	// arrived and carried along when it is forwarded. uncertain: it was sent to another
	// instance that may have issued it without the answer coming back (see answerUncertain).
	wallet    uuid.UUID
	uncertain atomic.Bool
	// Traces on only (trace.go): when the request joined the queue, and its span (here, or at
	// the instance that forwarded it).
	enqueued time.Time
	span     trace.SpanContext
}

const (
	queued int32 = iota
	taken
	abandoned
)

type issueOutcome struct {
	entry domain.WalletEntry
	err   error
	trace *batchTrace // the batch that decided it, when traces are on
}

// Refusal is the answer, from this instance's cache alone (no I/O, no lock, no query), to an
// issue request whose answer does not depend on who asks: the coupon's window refuses it at its
// arrival (not open, closed, paused), or the coupon is sold out and its holder set is final.
// claimed is the user the request claims to be, not yet verified. nil: only Issue can answer.
// verify true is the sold-out answer to a claimed user who holds the coupon: only a verified
// request may learn that it holds it (Issue answers it ErrAlreadyIssued), so the caller
// verifies first, and gives this refusal to a request that fails (see the service's Refusal).
func (s *Engine) Refusal(code string, claimed uuid.UUID, arrived time.Time) (refusal error, verify bool) {
	st := s.cached(code)
	if st == nil {
		return nil, false // unknown here: Issue looks it up
	}
	now := time.Now()
	if arrived.IsZero() || arrived.After(now) {
		arrived = now
	}
	if err := st.window.Load().check(s.clockAt(arrived, now)); err != nil {
		return fmt.Errorf("issue %s: %w", code, err), false
	}
	st.mu.Lock()
	_, held := st.holders[claimed]
	final := st.final
	st.mu.Unlock()
	if !final {
		return nil, false
	}
	return fmt.Errorf("issue %s: %w", code, domain.ErrSoldOut), held
}

// clockAt is the business clock (Config.Now) at arrived, a moment before now on the host's
// clock: the issuing window is checked at a request's arrival, not when it is handled.
func (s *Engine) clockAt(arrived, now time.Time) time.Time { return s.cfg.Now().Add(-now.Sub(arrived)) }

// Issue issues coupon code to userID, first come first served: a committed wallet entry, or
// domain.ErrCouponNotFound, domain.ErrEventNotOpen, domain.ErrEventClosed,
// domain.ErrAlreadyIssued, domain.ErrSoldOut, domain.ErrLockTimeout or domain.ErrUnavailable,
// in which case nothing was issued, or domain.ErrOutcomeUnknown.
//
// arrived is when the request reached this host (zero: now). Its place in the coupon's queue
// is by arrival, whatever delayed it since (a coupon's first load, scheduling), and the issuing
// window is checked at its arrival, so a request that arrived before the opening is not issued
// because it was handled after it.
func (s *Engine) Issue(ctx context.Context, code string, userID uuid.UUID, arrived time.Time) (domain.WalletEntry, error) {
	start := time.Now()
	if arrived.IsZero() || !arrived.Before(start) {
		arrived = start
	} else {
		s.observeArrival(start, arrived)
	}
	nowAtArrival := s.clockAt(arrived, start)
	st, err := s.state(ctx, code)
	if err != nil {
		return domain.WalletEntry{}, err
	}
	// The window as this instance knows it (no lock, no query): at most MetaRefresh old, and
	// usually moments old after a change (the bus).
	if err := st.window.Load().check(nowAtArrival); err != nil {
		return domain.WalletEntry{}, fmt.Errorf("issue %s: %w", code, err)
	}
	wallet := uuid.Must(uuid.NewV7()) // outside st.mu: the coupon's crowd queues on it
	st.mu.Lock()
	req, known := s.enqueueLocked(ctx, st, userID, arrived, wallet)
	st.mu.Unlock()
	if known != nil {
		return domain.WalletEntry{}, fmt.Errorf("issue %s: %w", code, known)
	}
	out := s.await(ctx, req)
	if s.cfg.Tracer != nil {
		s.traceRequest(ctx, req, out.trace)
	}
	if out.err != nil && req.uncertain.Load() {
		out = s.answerUncertain(ctx, st, req, out)
	}
	if out.err != nil {
		return domain.WalletEntry{}, fmt.Errorf("issue %s: %w", code, out.err)
	}
	return out.entry, nil
}

// enqueueLocked answers from committed facts when they decide (the returned error), or queues
// a request for userID in its place by arrival and makes sure a drainer serves it; its row, if
// issued, takes the id wallet (a new one when uuid.Nil). st.mu is held.
func (s *Engine) enqueueLocked(ctx context.Context, st *couponState, userID uuid.UUID, arrived time.Time, wallet uuid.UUID) (*issueRequest, error) {
	if known := st.known(userID); known != nil {
		return nil, known
	}
	if wallet == uuid.Nil {
		wallet = uuid.Must(uuid.NewV7())
	}
	req := &issueRequest{ctx: ctx, user: userID, arrived: arrived, deadline: arrived.Add(s.cfg.LockWait),
		wallet: wallet, done: make(chan issueOutcome, 1)}
	if s.cfg.Tracer != nil {
		req.enqueued, req.span = time.Now(), trace.SpanContextFromContext(ctx)
	}
	st.queue = insertByArrival(st.queue, req)
	s.kickLocked(st)
	return req, nil
}

// kickLocked makes sure a drainer serves the coupon's queue, and wakes an owner that lingers
// for more. st.mu is held.
func (s *Engine) kickLocked(st *couponState) {
	if !st.draining {
		st.draining = true
		s.drainers.Add(1)
		go s.drain(st)
	}
	select {
	case st.more <- struct{}{}:
	default:
	}
}

// await waits for a queued request's outcome. A queued request is answered at its deadline
// even while the drainer is busy (a slow transaction); once taken into a batch, it waits for
// the batch's outcome, which the transaction timeout bounds.
func (s *Engine) await(ctx context.Context, req *issueRequest) issueOutcome {
	timer := time.NewTimer(time.Until(req.deadline))
	defer timer.Stop()
	select {
	case out := <-req.done:
		return out
	case <-timer.C:
		if req.state.CompareAndSwap(queued, abandoned) {
			s.metrics.LockWait.Observe(s.cfg.LockWait.Seconds())
			return issueOutcome{err: fmt.Errorf("%w: waited %v", domain.ErrLockTimeout, s.cfg.LockWait)}
		}
		return <-req.done
	case <-ctx.Done():
		// A request already in a batch is decided there; its row, if any, is the user's.
		req.state.CompareAndSwap(queued, abandoned)
		return issueOutcome{err: ctx.Err()}
	}
}

// expire drops the requests that left the queue (abandoned, or their client went away) or are
// past their deadline, answering LOCK_TIMEOUT to the latter; it returns the rest, in order.
// st.mu is held.
func (s *Engine) expire(queue []*issueRequest, now time.Time) []*issueRequest {
	kept := queue[:0]
	for _, r := range queue {
		switch {
		case r.state.Load() != queued:
		case r.ctx.Err() != nil:
			r.state.Store(abandoned)
		case !now.Before(r.deadline):
			if r.state.CompareAndSwap(queued, abandoned) {
				r.done <- issueOutcome{err: fmt.Errorf("%w: waited %v", domain.ErrLockTimeout, s.cfg.LockWait)}
			}
		default:
			kept = append(kept, r)
		}
	}
	clear(queue[len(kept):]) // let the answered requests be collected
	return kept
}

func (s *Engine) failAll(st *couponState, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, r := range st.queue {
		if r.state.CompareAndSwap(queued, abandoned) {
			r.done <- issueOutcome{err: err}
		}
	}
	clear(st.queue)
	st.queue = st.queue[:0]
}

// answerUncertain decides what to tell a request answered with an error after it was sent to
// another instance that may have issued it without the answer coming back (it died, or the
// call timed out): if the user's row is the one this request would have created (its wallet
// id), this request was issued, and the answer is that row, 201, as the first attempt would
// have said, whatever the later attempt found (ALREADY_ISSUED, SOLD_OUT: its own row took the
// last coupon, LOCK_TIMEOUT: its deadline passed while it went back and forth). Otherwise
// nothing was issued to this request, and the error stands. When the row cannot be read,
// ALREADY_ISSUED stands (true either way) and any other error becomes OUTCOME_UNKNOWN: the
// first attempt may have committed.
func (s *Engine) answerUncertain(ctx context.Context, st *couponState, req *issueRequest, out issueOutcome) issueOutcome {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.TxTimeout)
	defer cancel()
	entries, err := s.store.UserWallet(rctx, req.user)
	if err != nil {
		s.log.Warn("read the wallet after an uncertain forward", "coupon", st.coupon.Code, "err", err)
		if !errors.Is(out.err, domain.ErrAlreadyIssued) {
			out.err = fmt.Errorf("%w: an earlier attempt may have committed: %w", domain.ErrOutcomeUnknown, out.err)
		}
		return out
	}
	for _, e := range entries {
		if e.ID == req.wallet && e.CouponID == st.coupon.ID {
			return issueOutcome{entry: e}
		}
	}
	return out
}

// requeue puts undecided requests back in the queue in their place by arrival, and makes sure
// a drainer serves them.
func (s *Engine) requeue(st *couponState, reqs []*issueRequest) {
	for _, r := range reqs {
		r.state.Store(queued)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.queue = append(st.queue, reqs...)
	slices.SortStableFunc(st.queue, func(a, b *issueRequest) int { return a.arrived.Compare(b.arrived) })
	s.kickLocked(st)
}

// insertByArrival adds r to a queue ordered by arrival. It almost always appends; a request
// that was held up on its way in (waiting for its coupon's first load) moves ahead of those that
// arrived after it.
func insertByArrival(queue []*issueRequest, r *issueRequest) []*issueRequest {
	i := len(queue)
	for i > 0 && queue[i-1].arrived.After(r.arrived) {
		i--
	}
	return slices.Insert(queue, i, r)
}
