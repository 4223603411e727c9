package service

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
)

// One owner per coupon.
//
// Behind an Ingress every instance receives a share of a coupon's crowd. If each batched only
// its own share, the coupon's lock would pass between instances at every batch and the
// batches would be ordered by who got the lock, not by arrival. Instead the instance that
// holds a coupon's lock is its owner: it keeps the lock while requests keep coming (the
// watchdog renews it), and every other instance forwards its queue for that coupon to the
// owner in batches, each request with its arrival time at the host it reached. The owner
// queues them with its own by arrival and issues them in its batches. So a coupon costs one
// lock acquisition per crowd whatever the number of instances, and first come, first served
// holds across instances to the precision of their clocks (synchronised to about a
// millisecond in a cluster; the boundary settle absorbs the forwarding delay, see settle).
//
// The owner is found in the lock itself: each grant's value carries the holder's advertised
// address (lock.WithHolderInfo). That value is a hint, never trusted further: the receiver of
// a forwarded batch serves it only while it holds the lock, and answers "misdirected"
// otherwise, and so does an owner that loses the lock (lease, partition, drain) for the
// forwarded requests it has not yet issued; the sender then queues them again. The lock's
// fencing token, checked by PostgreSQL, still guards every write.
//
// An instance cut off from the Redis quorum (a partition) cannot take the lock, but it can
// still reach the owner, whose address it knows from before or reads from the nodes it still
// reaches. When no owner is to be found it hands its queue to another instance it knows (one
// that forwarded to it, or owned a coupon), which serves it as if it had arrived there
// (relay); a relayed request is never relayed again.

// Peers carries a batch of issue requests to another instance and returns its outcomes.
type Peers interface {
	Send(ctx context.Context, addr string, b PeerBatch) ([]PeerResult, error)
}

// PeerBatch is a batch of issue requests for one coupon handed to another instance.
type PeerBatch struct {
	Code     string
	From     string // the sender's advertised address
	Relay    bool   // false: to the coupon's owner; true: to any instance, to serve as its own
	Requests []PeerRequest
}

// PeerRequest is one request of a PeerBatch: the user, and when the request reached the host
// that received it.
type PeerRequest struct {
	User    uuid.UUID
	Arrived time.Time
}

// PeerResult is the outcome of one PeerRequest: Result is an issue result label ("issued",
// "already_issued", "sold_out", ..., as in the issue metrics) or "misdirected" (not served
// here: send it elsewhere); Entry is the wallet entry when issued.
type PeerResult struct {
	Result string
	Entry  WalletEntry
}

// ErrMisdirected is returned by Receive for a batch forwarded to an instance that does not
// own the coupon (any more).
var ErrMisdirected = errors.New("this instance does not own the coupon")

const (
	resultMisdirected = "misdirected"
	// maxSends bounds the batches of one coupon being forwarded at once from one instance.
	maxSends = 4
	// misdirectPause is how long an address that said it does not own a coupon is not
	// forwarded to again, while its stale lock value may still be read from the nodes.
	misdirectPause = 500 * time.Millisecond
	// peerMemory is how long an instance seen forwarding or owning is kept as a relay target.
	peerMemory = time.Minute
)

// resultErrors maps a result label back to the service's error (nil for "issued").
var resultErrors = map[string]error{
	"issued":         nil,
	"already_issued": ErrAlreadyIssued,
	"sold_out":       ErrSoldOut,
	"not_found":      ErrCouponNotFound,
	"event_not_open": ErrEventNotOpen,
	"event_closed":   ErrEventClosed,
	"lock_timeout":   ErrLockTimeout,
	"unavailable":    ErrUnavailable,
}

type misdirected struct {
	addr string
	at   time.Time
}

// peerSet remembers the other instances this one has seen, as relay targets.
type peerSet struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (p *peerSet) note(addr string) {
	if addr == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]time.Time{}
	}
	if len(p.seen) >= 1024 { // a forged flood of addresses must not grow it without bound
		for a := range p.seen {
			delete(p.seen, a)
			break
		}
	}
	p.seen[addr] = time.Now()
}

// any returns a peer seen within peerMemory, at random, or "".
func (p *peerSet) any(except string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var fresh []string
	for a, at := range p.seen {
		if a != except && time.Since(at) < peerMemory {
			fresh = append(fresh, a)
		}
	}
	if len(fresh) == 0 {
		return ""
	}
	return fresh[rand.IntN(len(fresh))]
}

// learnOwner reads the coupon's owner from the lock and, when it is another instance that has
// not just refused, remembers it to forward to. It reports whether it found one.
func (s *Service) learnOwner(ctx context.Context, st *couponState, m Mutex) bool {
	addr, _, err := m.Holder(ctx)
	if err != nil || addr == "" || addr == s.cfg.Advertise {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.misdirect.addr == addr && time.Since(st.misdirect.at) < misdirectPause {
		return false
	}
	st.ownerAddr = addr
	s.peers.note(addr)
	return true
}

// forgetOwner stops forwarding to addr after it refused or failed.
func (s *Service) forgetOwner(st *couponState, addr string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ownerAddr == addr {
		st.ownerAddr = ""
	}
	st.misdirect = misdirected{addr: addr, at: time.Now()}
}

// relay hands the queue to another instance known to this one, when this one cannot reach
// the Redis quorum; it reports whether it did.
func (s *Service) relay(st *couponState, wait time.Duration) bool {
	addr := s.peers.any(s.cfg.Advertise)
	if addr == "" {
		return false
	}
	return s.forward(st, addr, true, wait)
}

// forward sends up to MaxBatch queued requests to addr (the owner; or any instance when
// relay) without waiting for the answer, at most maxSends batches at a time; the answers
// are delivered by the sending goroutine. It reports whether it sent any.
func (s *Service) forward(st *couponState, addr string, relay bool, wait time.Duration) bool {
	slot := time.NewTimer(wait)
	defer slot.Stop()
	select {
	case st.sends <- struct{}{}:
	case <-slot.C:
		return false // the head's deadline passed: the drainer answers it
	}
	st.mu.Lock()
	var batch []*issueRequest
	kept := st.queue[:0]
	for _, r := range st.queue {
		if len(batch) < s.cfg.MaxBatch && !(relay && r.relayed) && r.state.CompareAndSwap(queued, taken) {
			batch = append(batch, r)
		} else {
			kept = append(kept, r)
		}
	}
	clear(st.queue[len(kept):])
	st.queue = kept
	st.mu.Unlock()
	if len(batch) == 0 {
		<-st.sends
		return false
	}
	go func() {
		defer func() { <-st.sends }()
		s.send(st, addr, relay, batch)
	}()
	return true
}

// send forwards one batch and answers its requests; the requests the receiver did not serve,
// or all of them when it could not be reached, go back into the queue.
func (s *Service) send(st *couponState, addr string, relay bool, batch []*issueRequest) {
	b := PeerBatch{Code: st.coupon.Code, From: s.cfg.Advertise, Relay: relay, Requests: make([]PeerRequest, len(batch))}
	var last time.Time
	for i, r := range batch {
		b.Requests[i] = PeerRequest{User: r.user, Arrived: r.arrived}
		if r.deadline.After(last) {
			last = r.deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), last.Add(s.cfg.TxTimeout))
	defer cancel()
	results, err := s.cfg.Peers.Send(ctx, addr, b)
	if err == nil && len(results) != len(batch) {
		err = errors.New("peer answered a different number of results")
	}
	kind, outcome := "forward", "ok"
	if relay {
		kind = "relay"
	}
	switch {
	case errors.Is(err, ErrMisdirected):
		outcome = "misdirected"
	case err != nil:
		outcome = "error"
	}
	s.metrics.PeerBatches.WithLabelValues(kind, outcome).Inc()
	if err != nil {
		// Nothing, or not all, is known of the batch: the receiver may have died before or
		// after committing it. Queued again, each request is decided anew; one committed
		// meanwhile is then answered ALREADY_ISSUED, which is true.
		if !errors.Is(err, ErrMisdirected) {
			s.log.Warn("forward issue requests", "coupon", st.coupon.Code, "to", addr, "relay", relay, "size", len(batch), "err", err)
		}
		s.forgetOwner(st, addr)
		s.requeue(st, batch)
		return
	}
	var back []*issueRequest
	soldOut := false
	st.mu.Lock()
	for i, r := range batch {
		res := results[i]
		rerr, known := resultErrors[res.Result]
		switch {
		case !known: // misdirected, or a label this version does not know
			back = append(back, r)
			continue
		case rerr == nil:
			e := res.Entry
			if e.UserID != r.user || e.CouponCode != st.coupon.Code || e.ID == uuid.Nil {
				// Not an answer to this request: never tell a user "issued" on its word.
				s.log.Error("forwarded issue: peer's entry does not match the request", "coupon", st.coupon.Code, "to", addr)
				r.done <- issueOutcome{err: ErrUnavailable}
				continue
			}
			st.holders[r.user] = struct{}{}
			r.done <- issueOutcome{entry: e}
		default:
			if errors.Is(rerr, ErrAlreadyIssued) {
				st.holders[r.user] = struct{}{}
			}
			soldOut = soldOut || errors.Is(rerr, ErrSoldOut)
			r.done <- issueOutcome{err: rerr}
		}
	}
	confirm := soldOut && !st.final && !st.confirming
	st.confirming = st.confirming || confirm
	st.mu.Unlock()
	if len(back) > 0 {
		s.forgetOwner(st, addr)
		s.requeue(st, back)
	}
	if confirm {
		// Answer the rest of the crowd here from the final holder set, as the owner does.
		go func() {
			s.confirmSoldOut(context.Background(), st)
			st.mu.Lock()
			st.confirming = false
			st.mu.Unlock()
		}()
	}
}

// bounceLocked answers the forwarded requests in the queue of a coupon this instance does not
// own (any more) "misdirected", so that their senders queue them again. st.mu is held.
func (s *Service) bounceLocked(st *couponState) {
	if st.owner {
		return
	}
	kept := st.queue[:0]
	for _, r := range st.queue {
		if r.forwarded {
			if r.state.CompareAndSwap(queued, taken) {
				r.done <- issueOutcome{err: errMisdirected}
			}
			continue
		}
		kept = append(kept, r)
	}
	clear(st.queue[len(kept):])
	st.queue = kept
}

// errMisdirected is the outcome of a forwarded request that this instance will not serve.
var errMisdirected = errors.New("misdirected")

// Receive serves a batch another instance sent: forwarded to this instance as the coupon's
// owner (ErrMisdirected when it is not), or relayed, to serve as if it had arrived here. The
// arrival times are the sender's; they are kept within [now - LOCK_WAIT, now], so a sender
// can place its requests no earlier than any request still waiting here may have arrived.
func (s *Service) Receive(ctx context.Context, b PeerBatch) ([]PeerResult, error) {
	st, err := s.state(ctx, b.Code)
	if err != nil {
		return nil, err
	}
	if b.From != s.cfg.Advertise {
		s.peers.note(b.From)
	}
	now := time.Now()
	results := make([]PeerResult, len(b.Requests))
	reqs := make([]*issueRequest, len(b.Requests))
	st.mu.Lock()
	if !b.Relay && (!st.owner || s.draining.Load()) {
		st.mu.Unlock()
		return nil, ErrMisdirected
	}
	for i, pr := range b.Requests {
		at := pr.Arrived
		if earliest := now.Add(-s.cfg.LockWait); at.Before(earliest) {
			at = earliest
		}
		if at.After(now) {
			at = now
		}
		r, known := s.enqueueLocked(ctx, st, pr.User, at)
		if known != nil {
			results[i].Result = resultOf(known)
			continue
		}
		r.forwarded, r.relayed = !b.Relay, b.Relay
		reqs[i] = r
	}
	st.mu.Unlock()
	for i, r := range reqs {
		if r == nil {
			continue
		}
		s.observeArrival(now, r.arrived)
		out := s.await(ctx, r)
		if errors.Is(out.err, errMisdirected) {
			results[i].Result = resultMisdirected
			continue
		}
		// Counted in the issue metrics by the sender, which answers the client.
		results[i] = PeerResult{Result: resultOf(out.err), Entry: out.entry}
	}
	return results, nil
}
