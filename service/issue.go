package service

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
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

// Issue issues coupon code to userID, first come first served: a committed wallet entry, or
// domain.ErrCouponNotFound, domain.ErrAlreadyIssued, domain.ErrSoldOut, domain.ErrLockTimeout or domain.ErrUnavailable, in which
// case nothing was issued.
//
// The request's place in the queue is its arrival (see WithArrival), or the moment Issue is
// called.
func (s *Service) Issue(ctx context.Context, code string, userID uuid.UUID) (domain.WalletEntry, error) {
	start := time.Now()
	arrived := start
	if at, ok := ctx.Value(arrivalKey{}).(time.Time); ok && at.Before(start) {
		arrived = at
		s.observeArrival(start, at)
	}
	// The business clock at the request's arrival: the issuing window is checked then.
	e, err := s.issue(ctx, code, userID, arrived, s.now().Add(-start.Sub(arrived)))
	s.record(ctx, code, userID, start, err)
	return e, err
}

// record counts and logs the answer to an issue request that started at start.
func (s *Service) record(ctx context.Context, code string, userID uuid.UUID, start time.Time, err error) {
	result := resultOf(err)
	label := code
	if err != nil && (errors.Is(err, domain.ErrCouponNotFound) || s.cached(code) == nil) {
		label = "_unknown" // codes of no known coupon must not grow the metric's label set
	}
	s.outcome(label, result).Inc()
	if s.cfg.Tracer != nil {
		trace.SpanFromContext(ctx).SetAttributes(attrResult.String(result))
	}
	switch result {
	case "error":
		s.log.ErrorContext(ctx, "issue failed", "coupon", code, "user", userID, "err", err)
	default:
		if s.log.Enabled(ctx, slog.LevelDebug) { // spare a crowd the arguments' allocations
			s.log.DebugContext(ctx, "issue", "coupon", code, "user", userID, "result", result,
				"duration_ms", float64(time.Since(start).Microseconds())/1000)
		}
	}
}

type arrivalKey struct{}

// WithArrival tells Issue when the request reached this host (package internal/arrival), so
// that first come, first served is by arrival, not by when this process got round to it.
func WithArrival(ctx context.Context, at time.Time) context.Context {
	return context.WithValue(ctx, arrivalKey{}, at)
}

// outcome is the issue counter series of a coupon and result, cached: the label set is bounded
// (existing codes, and "_unknown"), and hashing labels on every answer shows in a crowd.
func (s *Service) outcome(coupon, result string) prometheus.Counter {
	key := [2]string{coupon, result}
	if c, ok := s.outcomes.Load(key); ok {
		return c.(prometheus.Counter)
	}
	c, _ := s.outcomes.LoadOrStore(key, s.metrics.IssueOutcomes.WithLabelValues(coupon, result))
	return c.(prometheus.Counter)
}

// resultOf is the metrics' label for an outcome: "issued" for none, else the error's label.
func resultOf(err error) string {
	if err == nil {
		return "issued"
	}
	return domain.ErrorOf(err).Label
}

// issue serves one request that arrived at the given time: its place in the coupon's queue is
// by arrival, whatever delayed it since (a coupon's first load, scheduling).
func (s *Service) issue(ctx context.Context, code string, userID uuid.UUID, arrived, nowAtArrival time.Time) (domain.WalletEntry, error) {
	st, err := s.state(ctx, code)
	if err != nil {
		return domain.WalletEntry{}, err
	}
	// The window as this instance knows it (no lock, no query): at most MetaRefresh old, and
	// usually moments old after a change (the bus). It is checked at the request's arrival, so
	// a request that arrived before the opening is not issued because it was handled after it.
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
	if errors.Is(out.err, domain.ErrAlreadyIssued) && req.uncertain.Load() {
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
func (s *Service) enqueueLocked(ctx context.Context, st *couponState, userID uuid.UUID, arrived time.Time, wallet uuid.UUID) (*issueRequest, error) {
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
func (s *Service) kickLocked(st *couponState) {
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
func (s *Service) await(ctx context.Context, req *issueRequest) issueOutcome {
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

// drain serves the coupon's queue until it is empty: as the coupon's owner under its lock, or
// by forwarding the queue to the instance that owns it (see forward.go).
func (s *Service) drain(st *couponState) {
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
func (s *Service) own(ctx context.Context, st *couponState, m Mutex, g grant) {
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

// expire drops the requests that left the queue (abandoned, or their client went away) or are
// past their deadline, answering LOCK_TIMEOUT to the latter; it returns the rest, in order.
// st.mu is held.
func (s *Service) expire(queue []*issueRequest, now time.Time) []*issueRequest {
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

func (s *Service) failAll(st *couponState, err error) {
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

// runBatch issues the front of the queue in one transaction under the lock and answers each
// request; it reports whether it answered any request, and whether the grant can serve
// another batch (false when the token was stale or the transaction failed). g is the grant's
// trace (traces on).
func (s *Service) runBatch(ctx context.Context, st *couponState, m Mutex, g grant) (ran, good bool) {
	st.mu.Lock()
	if st.final {
		// Sold out with the complete holder set known (see loadHolders): those who queued
		// while it was found need no transaction either.
		ran = len(st.queue) > 0
		s.answerFromFacts(st)
		st.mu.Unlock()
		return ran, true
	}
	s.settle(st)  // a batch that will sell out waits for earlier arrivals still on their way
	gen := st.gen // the stock this batch runs against, as far as this instance knows
	st.queue = s.expire(st.queue, time.Now())
	var batch []*issueRequest
	n := 0
	for ; n < len(st.queue) && len(batch) < s.cfg.MaxBatch; n++ {
		if r := st.queue[n]; r.state.CompareAndSwap(queued, taken) {
			batch = append(batch, r)
		}
	}
	st.queue = append(st.queue[:0], st.queue[n:]...)
	st.mu.Unlock()

	var results []repository.Result
	var err error
	if len(batch) == 0 {
		return false, true
	}
	var bt *batchTrace
	if s.cfg.Tracer != nil {
		var span trace.Span
		span, bt = s.startBatch(st.coupon.Code, g, batch)
		defer func() { s.endBatch(span, bt, results, err) }()
		ctx = trace.ContextWithSpan(ctx, span) // the batch's log lines carry its trace id
	}
	results, err = s.issueBatch(ctx, st, m, batch, bt)
	s.metrics.BatchSize.Observe(float64(len(batch)))

	if errors.Is(err, repository.ErrStaleFence) {
		// PostgreSQL accepted a newer grant than ours: our lock was lost, or Redis lost its
		// fencing counters (nodes restarted empty). Raise the counter to PostgreSQL's and let
		// the batch go again with a fresh grant.
		if c, cerr := s.repo.CouponByCode(ctx, st.coupon.Code); cerr == nil {
			if aerr := s.locks.AdvanceFence(ctx, lockName(st.coupon.Code), c.FenceToken); aerr != nil {
				s.log.Warn("advance fence", "coupon", st.coupon.Code, "err", aerr)
			}
		}
		s.requeue(st, batch)
		return true, false
	}
	if err != nil {
		err = s.translate(err)
		// PostgreSQL's clock refused the window (this instance's cache or clock is behind it):
		// the batch wrote nothing, the grant is still good, and the cache is read again.
		window := errors.Is(err, domain.ErrEventClosed) || errors.Is(err, domain.ErrEventNotOpen)
		switch {
		case window:
			go s.reload(context.WithoutCancel(ctx), st)
		case errors.Is(err, domain.ErrOutcomeUnknown):
			go s.resolveLater(st, batch)
		case !errors.Is(err, domain.ErrUnavailable):
			s.log.ErrorContext(ctx, "issue batch", "coupon", st.coupon.Code, "size", len(batch), "err", err)
		}
		for _, r := range batch {
			r.done <- issueOutcome{err: err, trace: bt}
		}
		return true, window
	}

	var retry []*issueRequest
	var holders []uuid.UUID // to tell the other instances
	soldOut := false
	st.mu.Lock()
	for i, r := range batch {
		switch res := results[i]; res.Outcome {
		case repository.Issued:
			st.holders[r.user] = struct{}{}
			holders = append(holders, r.user)
			st.remaining--
			e := res.Entry
			e.CouponCode, e.DiscountAmount = st.coupon.Code, st.coupon.DiscountAmount
			e.ExpiresAt = e.IssuedAt.Add(time.Duration(st.coupon.ValidDays) * 24 * time.Hour) // as the schema's trigger
			r.done <- issueOutcome{entry: e, trace: bt}
		case repository.AlreadyIssued:
			st.holders[r.user] = struct{}{}
			holders = append(holders, r.user)
			r.done <- issueOutcome{err: domain.ErrAlreadyIssued, trace: bt}
		case repository.SoldOut:
			soldOut = true
			r.done <- issueOutcome{err: domain.ErrSoldOut, trace: bt}
		default:
			retry = append(retry, r)
		}
	}
	// A stock raised since the batch began voids its sold-out finding.
	soldOut = soldOut && st.gen == gen
	if soldOut {
		st.remaining = 0
	}
	learnFinal := soldOut && !st.soldOut
	st.soldOut = st.soldOut || soldOut
	st.mu.Unlock()
	s.publishFacts(st.coupon.Code, holders, soldOut)
	if len(retry) > 0 {
		s.requeue(st, retry)
	}
	if learnFinal {
		s.loadHolders(ctx, st, gen)
	}
	return true, len(retry) == 0
}

// answerUncertain decides what to tell a request answered ALREADY_ISSUED after it was sent to
// another instance that may have issued it without the answer coming back (it died, or the
// call timed out): if the user's row is the one this request would have created (its wallet
// id), this request was issued, and the answer is that row, 201, as the first attempt would
// have said. Otherwise the row is from another request of the user, and ALREADY_ISSUED stands;
// it also stands, being true either way, when the row cannot be read.
func (s *Service) answerUncertain(ctx context.Context, st *couponState, req *issueRequest, out issueOutcome) issueOutcome {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.TxTimeout)
	defer cancel()
	entries, err := s.repo.UserWallet(rctx, req.user)
	if err != nil {
		s.log.Warn("read the wallet after an uncertain forward", "coupon", st.coupon.Code, "err", err)
		return out
	}
	for _, e := range entries {
		if e.ID == req.wallet && e.CouponID == st.coupon.ID {
			return issueOutcome{entry: e}
		}
	}
	return out
}

// resolveLater finds out, once PostgreSQL answers again, what became of a batch whose outcome
// was unknown (its requests were answered OUTCOME_UNKNOWN), and records the holders, so that
// their retries are answered 409 at once. It tries for resolveFor.
func (s *Service) resolveLater(st *couponState, batch []*issueRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), resolveFor)
	defer cancel()
	users, wallets := make([]uuid.UUID, len(batch)), make([]uuid.UUID, len(batch))
	for i, r := range batch {
		users[i], wallets[i] = r.user, r.wallet
	}
	results, err := s.repo.ResolveBatch(ctx, st.coupon.ID, users, wallets)
	if err != nil {
		s.log.Error("batch outcome still unknown; the users' wallets tell", "coupon", st.coupon.Code, "users", len(users), "err", err)
		return
	}
	var holders []uuid.UUID
	issued := 0
	st.mu.Lock()
	for i, res := range results {
		if res.Outcome == repository.Issued || res.Outcome == repository.AlreadyIssued {
			st.holders[users[i]] = struct{}{}
			holders = append(holders, users[i])
		}
		if res.Outcome == repository.Issued {
			issued++
		}
	}
	st.mu.Unlock()
	s.publishFacts(st.coupon.Code, holders, false)
	s.log.Warn("batch outcome resolved after OUTCOME_UNKNOWN answers", "coupon", st.coupon.Code, "users", len(users), "issued", issued)
}

// resolveFor bounds how long a batch of unknown outcome is looked into.
const resolveFor = time.Minute

// answerFromFacts answers every queued request of a coupon whose sold-out holder set is final:
// 409 for a holder, 410 for anyone else. st.mu is held.
func (s *Service) answerFromFacts(st *couponState) {
	for _, r := range st.queue {
		if r.state.CompareAndSwap(queued, taken) {
			r.done <- issueOutcome{err: st.known(r.user)}
		}
	}
	clear(st.queue)
	st.queue = st.queue[:0]
}

// issueBatch runs the batch's transaction with the grant's fencing token; it stops the moment
// the lock is known lost (the token and the constraints guard the moments before). bt, when
// traces are on, records the fence and the transaction's times.
func (s *Service) issueBatch(ctx context.Context, st *couponState, m Mutex, batch []*issueRequest, bt *batchTrace) ([]repository.Result, error) {
	fence, _ := m.Fence(ctx)
	users, wallets := make([]uuid.UUID, len(batch)), make([]uuid.UUID, len(batch))
	for i, r := range batch {
		users[i], wallets[i] = r.user, r.wallet
	}
	txCtx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout)
	defer cancel()
	lost := m.Lost(ctx)
	go func() {
		select {
		case <-lost:
			cancel()
		case <-txCtx.Done():
		}
	}()
	start := time.Now()
	results, err := s.commit(txCtx, repository.Batch{CouponID: st.coupon.ID, Fence: fence, Users: users, Wallets: wallets})
	s.metrics.TxDuration.Observe(time.Since(start).Seconds())
	if bt != nil {
		bt.fence, bt.txStart, bt.txEnd = fence, start, time.Now()
	}
	return results, err
}

// unlock releases the lock; a lost lock is logged (PostgreSQL's fencing and constraints kept the
// batch right).
func (s *Service) unlock(ctx context.Context, m Mutex) {
	uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := m.Unlock(uctx); err != nil {
		s.log.Warn("unlock", "err", err)
	}
}

// requeue puts undecided requests back in the queue in their place by arrival, and makes sure
// a drainer serves them.
func (s *Service) requeue(st *couponState, reqs []*issueRequest) {
	for _, r := range reqs {
		r.state.Store(queued)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.queue = append(st.queue, reqs...)
	slices.SortStableFunc(st.queue, func(a, b *issueRequest) int { return a.arrived.Compare(b.arrived) })
	s.kickLocked(st)
}

// loadHolders reads the complete, now final, set of holders of a sold-out coupon, so that every
// later request is answered without the lock: 409 for a holder, 410 for anyone else.
// A stock change meanwhile (a new generation) leaves it not final.
func (s *Service) loadHolders(ctx context.Context, st *couponState, gen uint64) {
	holders, err := s.repo.HoldersOf(ctx, st.coupon.ID)
	if err != nil {
		s.log.Warn("load holders of a sold-out coupon", "coupon", st.coupon.Code, "err", err)
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, u := range holders {
		st.holders[u] = struct{}{}
	}
	st.final = st.soldOut && st.gen == gen
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
