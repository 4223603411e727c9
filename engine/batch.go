package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"time"

	"couponsvc/repository"

	"github.com/google/uuid"
)

// runBatch issues the front of the queue in one transaction under the lock and answers each
// request; it reports whether it answered any request, and whether the grant can serve
// another batch (false when the token was stale or the transaction failed).
func (s *Engine) runBatch(ctx context.Context, st *couponState, m Mutex) (ran, good bool) {
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
	results, err = s.issueBatch(ctx, st, m, batch)
	s.metrics.BatchSize.Observe(float64(len(batch)))

	if errors.Is(err, repository.ErrStaleFence) {
		// PostgreSQL accepted a newer grant than ours: our lock was lost, or Redis lost its
		// fencing counters (nodes restarted empty). Raise the counter to PostgreSQL's and let
		// the batch go again with a fresh grant.
		if c, cerr := s.store.CouponByCode(ctx, st.coupon.Code); cerr == nil {
			if aerr := s.locks.AdvanceFence(ctx, lockName(st.coupon.Code), c.FenceToken); aerr != nil {
				s.log.Warn("advance fence", "coupon", st.coupon.Code, "err", aerr)
			}
		}
		s.requeue(st, batch)
		return true, false
	}
	if err != nil {
		err = Translate(err)
		if errors.Is(err, domain.ErrOutcomeUnknown) {
			go s.resolveLater(st, batch)
		}
		if !errors.Is(err, domain.ErrUnavailable) && !errors.Is(err, domain.ErrOutcomeUnknown) {
			s.log.Error("issue batch", "coupon", st.coupon.Code, "size", len(batch), "err", err)
		}
		for _, r := range batch {
			r.done <- issueOutcome{err: err}
		}
		return true, false
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
			r.done <- issueOutcome{entry: e}
		case repository.AlreadyIssued:
			st.holders[r.user] = struct{}{}
			holders = append(holders, r.user)
			r.done <- issueOutcome{err: domain.ErrAlreadyIssued}
		case repository.SoldOut:
			soldOut = true
			r.done <- issueOutcome{err: domain.ErrSoldOut}
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
func (s *Engine) issueBatch(ctx context.Context, st *couponState, m Mutex, batch []*issueRequest) ([]repository.Result, error) {
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
