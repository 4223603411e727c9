package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"time"

	"couponsvc/repository"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
)

// runBatch issues the front of the queue in one transaction under the lock and answers each
// request; it reports whether it answered any request, and whether the grant can serve
// another batch (false when the token was stale or the transaction failed; a batch the
// window refused leaves it good). g is the grant's trace (traces on).
func (s *Engine) runBatch(ctx context.Context, st *couponState, m Mutex, g grant) (ran, good bool) {
	st.mu.Lock()
	if st.final {
		// Sold out with the complete holder set known (see loadHolders): those who queued
		// while it was found need no transaction either.
		ran = len(st.queue) > 0
		s.answerFromFacts(st)
		st.mu.Unlock()
		return ran, true
	}
	batch, gen := s.takeBatchLocked(st)
	st.mu.Unlock()
	if len(batch) == 0 {
		return false, true
	}

	var results []repository.Result
	var err error
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
		s.advanceFence(ctx, st)
		s.requeue(st, batch) // to go again with a fresh grant
		return true, false
	}
	if refusedByWindow(err) {
		s.refuseBatch(ctx, st, batch, err, bt)
		return true, true
	}
	if err != nil {
		s.failBatch(ctx, st, batch, err, bt)
		return true, false
	}

	learned, retry := s.answerBatch(st, batch, results, gen, bt)
	s.publishFacts(st.coupon.Code, learned.holders, learned.soldOut)
	if len(retry) > 0 {
		s.requeue(st, retry)
	}
	if learned.newlySoldOut {
		s.loadHolders(ctx, st, gen)
	}
	return true, len(retry) == 0
}

// takeBatchLocked takes up to MaxBatch requests off the front of the queue, in arrival order,
// after the boundary settle when the batch will sell the coupon out; gen is the generation of
// the stock the batch runs against, as far as this instance knows. st.mu is held (settle
// lets go of it while it waits).
func (s *Engine) takeBatchLocked(st *couponState) (batch []*issueRequest, gen uint64) {
	s.settle(st) // a batch that will sell out waits for earlier arrivals still on their way
	gen = st.gen
	st.queue = s.expire(st.queue, time.Now())
	n := 0
	for ; n < len(st.queue) && len(batch) < s.cfg.MaxBatch; n++ {
		if r := st.queue[n]; r.state.CompareAndSwap(queued, taken) {
			batch = append(batch, r)
		}
	}
	st.queue = append(st.queue[:0], st.queue[n:]...)
	return batch, gen
}

// advanceFence raises the lock's fencing counter to the token PostgreSQL last accepted, after
// it refused ours as stale: our lock was lost, or Redis lost its fencing counters (nodes
// restarted empty). The next grant's token is then accepted.
func (s *Engine) advanceFence(ctx context.Context, st *couponState) {
	c, err := s.store.CouponByCode(ctx, st.coupon.Code)
	if err != nil {
		return
	}
	if err := s.locks.AdvanceFence(ctx, lockName(st.coupon.Code), c.FenceToken); err != nil {
		s.log.Warn("advance fence", "coupon", st.coupon.Code, "err", err)
	}
}

// refusedByWindow reports whether PostgreSQL's clock refused a batch: the coupon is closed,
// paused or not open yet, whatever this instance's cached copy or clock said.
func refusedByWindow(err error) bool {
	return errors.Is(err, domain.ErrEventClosed) || errors.Is(err, domain.ErrEventNotOpen)
}

// refuseBatch answers a batch the window refused (nothing was written, the grant is still
// good) and reads the coupon again: this instance's copy is behind PostgreSQL's.
func (s *Engine) refuseBatch(ctx context.Context, st *couponState, batch []*issueRequest, err error, bt *batchTrace) {
	go s.reload(context.WithoutCancel(ctx), st)
	for _, r := range batch {
		r.done <- issueOutcome{err: err, trace: bt}
	}
}

// failBatch answers every request of a batch whose transaction failed with the domain's
// error; when its outcome is unknown, it is looked into in the background (resolveLater).
func (s *Engine) failBatch(ctx context.Context, st *couponState, batch []*issueRequest, err error, bt *batchTrace) {
	err = Translate(err)
	if errors.Is(err, domain.ErrOutcomeUnknown) {
		go s.resolveLater(st, batch)
	}
	if !errors.Is(err, domain.ErrUnavailable) && !errors.Is(err, domain.ErrOutcomeUnknown) {
		s.log.ErrorContext(ctx, "issue batch", "coupon", st.coupon.Code, "size", len(batch), "err", err)
	}
	for _, r := range batch {
		r.done <- issueOutcome{err: err, trace: bt}
	}
}

// batchFacts is what a committed batch taught: the users who hold the coupon (to tell the
// other instances), whether it found the coupon sold out, and whether that is news here.
type batchFacts struct {
	holders      []uuid.UUID
	soldOut      bool
	newlySoldOut bool
}

// answerBatch answers each request of a committed batch from its result (201, 409, 410) and
// records the facts it taught; it returns them, and the requests nothing was decided for
// (to queue again). A stock raised since the batch began (a generation other than gen) voids
// its sold-out finding.
func (s *Engine) answerBatch(st *couponState, batch []*issueRequest, results []repository.Result, gen uint64, bt *batchTrace) (learned batchFacts, retry []*issueRequest) {
	st.mu.Lock()
	defer st.mu.Unlock()
	soldOut := false
	for i, r := range batch {
		switch res := results[i]; res.Outcome {
		case repository.Issued:
			st.holders[r.user] = struct{}{}
			learned.holders = append(learned.holders, r.user)
			st.remaining--
			e := res.Entry
			e.CouponCode, e.DiscountAmount = st.coupon.Code, st.coupon.DiscountAmount
			e.ExpiresAt = e.IssuedAt.Add(time.Duration(st.coupon.ValidDays) * 24 * time.Hour) // as the schema's trigger
			r.done <- issueOutcome{entry: e, trace: bt}
		case repository.AlreadyIssued:
			st.holders[r.user] = struct{}{}
			learned.holders = append(learned.holders, r.user)
			r.done <- issueOutcome{err: domain.ErrAlreadyIssued, trace: bt}
		case repository.SoldOut:
			soldOut = true
			r.done <- issueOutcome{err: domain.ErrSoldOut, trace: bt}
		default:
			retry = append(retry, r)
		}
	}
	learned.soldOut = soldOut && st.gen == gen
	if learned.soldOut {
		st.remaining = 0
	}
	learned.newlySoldOut = learned.soldOut && !st.soldOut
	st.soldOut = st.soldOut || learned.soldOut
	return learned, retry
}

// resolveLater finds out, once PostgreSQL answers again, what became of a batch whose outcome
// was unknown (its requests were answered OUTCOME_UNKNOWN), and records the holders, so that
// their retries are answered 409 at once. It tries for resolveFor.
func (s *Engine) resolveLater(st *couponState, batch []*issueRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), resolveFor)
	defer cancel()
	users, wallets := make([]uuid.UUID, len(batch)), make([]uuid.UUID, len(batch))
	for i, r := range batch {
		users[i], wallets[i] = r.user, r.wallet
	}
	results, err := s.store.ResolveBatch(ctx, st.coupon.ID, users, wallets)
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
func (s *Engine) answerFromFacts(st *couponState) {
	for _, r := range st.queue {
		if r.state.CompareAndSwap(queued, taken) {
			r.done <- issueOutcome{err: st.known(r.user)}
		}
	}
	clear(st.queue)
	st.queue = st.queue[:0]
}

// issueBatch runs the batch's transaction with the grant's fencing token; it stops the moment
// the lock is known lost (the token and the constraints guard the moments before).
func (s *Engine) issueBatch(ctx context.Context, st *couponState, m Mutex, batch []*issueRequest, bt *batchTrace) ([]repository.Result, error) {
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

// loadHolders reads the complete, now final, set of holders of a sold-out coupon, so that every
// later request is answered without the lock: 409 for a holder, 410 for anyone else.
// A stock change meanwhile (a new generation) leaves it not final.
func (s *Engine) loadHolders(ctx context.Context, st *couponState, gen uint64) {
	holders, err := s.store.HoldersOf(ctx, st.coupon.ID)
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
