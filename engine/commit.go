package engine

import (
	"context"

	"couponsvc/repository"
)

// Group commit across coupons.
//
// Within one coupon, a batch already serves everyone queued (one statement, one commit). With
// many coupons open at once each coupon's owner runs its own small batches, and PostgreSQL's
// commits, about a thousand a second on two cores, become the limit: a hundred coupons made
// two thousand commits of two or three requests each. So the batches of this instance go
// through one committer: a batch that finds fewer than maxGroups transactions in flight runs
// at once, alone (a single hot coupon waits for nothing); the others wait for the next free
// transaction and share it, one commit for all of them (repository.IssueBatches).

// maxGroups bounds the issue transactions this instance runs at once; maxGroupBatches bounds
// the batches one of them carries.
const (
	maxGroups       = 4
	maxGroupBatches = 64
)

type commitRequest struct {
	ctx   context.Context
	batch repository.Batch
	done  chan repository.BatchOutcome // buffered
}

// commit issues one coupon's batch, alone or together with other coupons' batches.
func (s *Engine) commit(ctx context.Context, b repository.Batch) ([]repository.Result, error) {
	req := &commitRequest{ctx: ctx, batch: b, done: make(chan repository.BatchOutcome, 1)}
	s.commits.add(req)
	out := <-req.done
	return out.Results, out.Err
}

// runGroup issues a group of batches in one transaction and delivers each one's outcome. A
// batch alone keeps its own context (cancelled when its lock is lost); a group runs under the
// transaction timeout, and the fencing tokens guard each of its batches.
func (s *Engine) runGroup(group []*commitRequest) {
	ctx := group[0].ctx
	if len(group) > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), s.cfg.TxTimeout)
		defer cancel()
	}
	batches := make([]repository.Batch, len(group))
	for i, r := range group {
		batches[i] = r.batch
	}
	outs := s.store.IssueBatches(ctx, batches)
	s.changes.Add(1) // before any answer: a client reads its own issue (the service's reads)
	for i, out := range outs {
		group[i].done <- out
	}
}
