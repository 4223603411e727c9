package engine

import (
	"couponsvc/domain"

	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
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
// address (lock.WithHolderInfo), sealed with the instances' key so that nobody else who can
// write to Redis can send the instances' requests elsewhere (Peers.Owner). It is a hint, never
// trusted further: the receiver of
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

// Peers carries a batch of issue requests to another instance and returns its outcomes, one
// slice per coupon of the batch, in order.
type Peers interface {
	Send(ctx context.Context, addr string, b PeerBatch) ([][]PeerResult, error)
	// Owner is the address a lock's holder info names, when it is an instance's own (see
	// internal/peer.HolderInfo: sealed with the instances' key), ok false otherwise.
	Owner(holderInfo string) (addr string, ok bool)
}

// PeerBatch is what one call to another instance carries: requests for one or more coupons.
type PeerBatch struct {
	From    string // the sender's advertised address
	Coupons []PeerCoupon
}

// PeerCoupon is the part of a PeerBatch for one coupon.
type PeerCoupon struct {
	Code     string
	Relay    bool // false: to the coupon's owner; true: to any instance, to serve as its own
	Requests []PeerRequest
}

// PeerRequest is one request of a PeerBatch: the user, and when the request reached the host
// that received it.
type PeerRequest struct {
	User    uuid.UUID
	Arrived time.Time
	Wallet  uuid.UUID // the id its row takes if issued (uuid.Nil: the receiver chooses)
	// Trace is the request's span at the sender (traces on): the owner's batch links to it.
	Trace trace.SpanContext
}

// PeerResult is the outcome of one PeerRequest: Result is "issued", the error's code
// ("ALREADY_ISSUED", "SOLD_OUT", ...: see package domain) or "misdirected" (not served here:
// send it elsewhere); Entry is the wallet entry when issued.
type PeerResult struct {
	Result string
	Entry  domain.WalletEntry
	// Batch is the span of the owner's batch that decided it (traces on at the owner).
	Batch trace.SpanContext
}

const (
	resultMisdirected = "misdirected"
	// maxSends bounds the calls in flight from this instance to one other instance; requests
	// forwarded meanwhile, for any coupon, wait and share the next call.
	maxSends = 4
	// misdirectPause is how long an address that said it does not own a coupon is not
	// forwarded to again, while its stale lock value may still be read from the nodes.
	misdirectPause = 100 * time.Millisecond
	// maxOutboxes is the number of peer outboxes past which the idle ones are dropped.
	maxOutboxes = 64
	// peerMemory is how long an instance seen forwarding or owning is kept as a relay target.
	peerMemory = time.Minute
)

const resultIssued = "issued"

// peerResult is what a PeerResult says of an outcome.
func peerResult(err error) string {
	if err == nil {
		return resultIssued
	}
	if errors.Is(err, errMisdirected) {
		return resultMisdirected
	}
	return domain.ErrorOf(err).Code
}

// peerOutcome reads a PeerResult's outcome: nil for issued, the error, or known false when the
// request was not decided there (misdirected; the receiver failed or gave up; a result this
// version does not know), to be sent again.
func peerOutcome(result string) (err error, known bool) {
	if result == resultIssued {
		return nil, true
	}
	e := domain.ByCode(result)
	if e == nil || e == domain.Internal || e == domain.Canceled {
		return nil, false
	}
	return e, true
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
func (s *Engine) learnOwner(ctx context.Context, st *couponState, m Mutex) bool {
	info, _, err := m.Holder(ctx)
	if err != nil || s.cfg.Peers == nil {
		return false
	}
	addr, ok := s.cfg.Peers.Owner(info)
	if !ok || addr == s.cfg.Advertise {
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
func (s *Engine) forgetOwner(st *couponState, addr string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ownerAddr == addr {
		st.ownerAddr = ""
	}
	st.misdirect = misdirected{addr: addr, at: time.Now()}
}

// relay hands the queue to another instance known to this one, when this one cannot reach
// the Redis quorum; it reports whether it did.
func (s *Engine) relay(st *couponState) bool {
	addr := s.peers.any(s.cfg.Advertise)
	if addr == "" {
		return false
	}
	return s.forward(st, addr, true)
}

// outItem is one coupon's batch in an outbox.
type outItem struct {
	st    *couponState
	relay bool
	batch []*issueRequest
	at    time.Time // when the batch left the queue (traces on)
}

// forward moves up to MaxBatch queued requests (not forwarded ones; not relayed ones, when
// relaying) to the outbox of addr (the owner; or any instance when relay); the answers are
// delivered by the sending goroutine. It reports whether it moved any.
func (s *Engine) forward(st *couponState, addr string, relay bool) bool {
	st.mu.Lock()
	var batch []*issueRequest
	kept := st.queue[:0]
	for _, r := range st.queue {
		// A forwarded request is served here as the owner or goes back to its sender
		// (bounceLocked), never on to a third instance; a relayed one is not relayed again.
		if len(batch) < s.cfg.MaxBatch && !r.forwarded && !(relay && r.relayed) && r.state.CompareAndSwap(queued, taken) {
			batch = append(batch, r)
		} else {
			kept = append(kept, r)
		}
	}
	clear(st.queue[len(kept):])
	st.queue = kept
	st.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	it := &outItem{st: st, relay: relay, batch: batch}
	if s.cfg.Tracer != nil {
		it.at = time.Now()
	}
	s.outbox(addr).add(it)
	return true
}

// outbox gathers the batches waiting to be sent to the instance at addr: one call carries
// every coupon's waiting requests, at most maxSends calls at a time.
func (s *Engine) outbox(addr string) *grouper[*outItem] {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	ob := s.outboxes[addr]
	if ob == nil && len(s.outboxes) >= maxOutboxes {
		// Addresses come from lock values in Redis: many of them (pods come and go, or
		// something wrote made-up ones) must not grow the map without bound.
		for a, o := range s.outboxes {
			if o.idle() {
				delete(s.outboxes, a)
			}
		}
	}
	if ob == nil {
		ob = &grouper[*outItem]{max: maxSends, run: func(items []*outItem) { s.send(addr, items) }}
		s.outboxes[addr] = ob
	}
	return ob
}

// send forwards the items in one call and answers their requests; the requests the receiver
// did not serve, or all of them when it could not be reached, go back into their queues.
func (s *Engine) send(addr string, items []*outItem) {
	b := PeerBatch{From: s.cfg.Advertise, Coupons: make([]PeerCoupon, len(items))}
	var last time.Time
	for i, it := range items {
		pc := PeerCoupon{Code: it.st.coupon.Code, Relay: it.relay, Requests: make([]PeerRequest, len(it.batch))}
		for j, r := range it.batch {
			pc.Requests[j] = PeerRequest{User: r.user, Arrived: r.arrived, Wallet: r.wallet, Trace: r.span}
			if r.deadline.After(last) {
				last = r.deadline
			}
		}
		b.Coupons[i] = pc
	}
	ctx, cancel := context.WithDeadline(context.Background(), last.Add(s.cfg.TxTimeout))
	defer cancel()
	if s.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = s.startForward(ctx, addr, items)
		defer span.End()
	}
	results, err := s.cfg.Peers.Send(ctx, addr, b)
	if err == nil && len(results) != len(items) {
		err = errors.New("peer answered a different number of coupons")
	}
	for i, it := range items {
		if err == nil && len(results[i]) != len(it.batch) {
			err = errors.New("peer answered a different number of results")
		}
	}
	if err != nil {
		// Nothing, or not all, is known of the batch: the receiver may have died before or
		// after committing it. Queued again, each request is decided anew; one committed
		// meanwhile is then found by its wallet id and answered 201 (answerUncertain).
		s.log.WarnContext(ctx, "forward issue requests", "to", addr, "coupons", len(items), "err", err)
		for _, it := range items {
			s.metrics.PeerBatches.WithLabelValues(kindOf(it.relay), "error").Inc()
			s.forgetOwner(it.st, addr)
			for _, r := range it.batch {
				r.uncertain.Store(true)
			}
			s.requeue(it.st, it.batch)
		}
		return
	}
	for i, it := range items {
		s.answerForwarded(it, addr, results[i])
	}
}

func kindOf(relay bool) string {
	if relay {
		return "relay"
	}
	return "forward"
}

// answerForwarded answers one coupon's forwarded requests from the receiver's results.
func (s *Engine) answerForwarded(it *outItem, addr string, results []PeerResult) {
	st := it.st
	var back []*issueRequest
	soldOut := false
	st.mu.Lock()
	for i, r := range it.batch {
		res := results[i]
		var bt *batchTrace
		if s.cfg.Tracer != nil {
			bt = &batchTrace{span: res.Batch, taken: it.at, forwardedTo: addr}
		}
		rerr, known := peerOutcome(res.Result)
		switch {
		case !known:
			back = append(back, r)
			continue
		case rerr == nil:
			e := res.Entry
			if e.UserID != r.user || e.CouponCode != st.coupon.Code || e.ID == uuid.Nil {
				// Not an answer to this request: never tell a user "issued" on its word.
				s.log.Error("forwarded issue: peer's entry does not match the request", "coupon", st.coupon.Code, "to", addr)
				r.done <- issueOutcome{err: domain.ErrUnavailable}
				continue
			}
			st.holders[r.user] = struct{}{}
			r.done <- issueOutcome{entry: e, trace: bt}
		default:
			if errors.Is(rerr, domain.ErrAlreadyIssued) {
				st.holders[r.user] = struct{}{}
			}
			soldOut = soldOut || errors.Is(rerr, domain.ErrSoldOut)
			r.done <- issueOutcome{err: rerr, trace: bt}
		}
	}
	confirm := soldOut && !st.final && !st.confirming
	st.confirming = st.confirming || confirm
	st.mu.Unlock()
	outcome := "ok"
	if len(back) > 0 {
		outcome = "misdirected"
		s.forgetOwner(st, addr)
		s.requeue(st, back)
	}
	s.metrics.PeerBatches.WithLabelValues(kindOf(it.relay), outcome).Inc()
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
func (s *Engine) bounceLocked(st *couponState) {
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

// Receive serves a batch another instance sent: for each coupon, requests forwarded to this
// instance as the coupon's owner (answered "misdirected" when it is not), or relayed, to serve
// as if they had arrived here. The arrival times are the sender's; they are kept within
// [now - LOCK_WAIT, now], so a sender can place its requests no earlier than any request still
// waiting here may have arrived. It returns one result per request, per coupon, in order.
func (s *Engine) Receive(ctx context.Context, b PeerBatch) [][]PeerResult {
	if b.From != s.cfg.Advertise {
		s.peers.note(b.From)
	}
	type waiting struct {
		i, j int
		st   *couponState
		r    *issueRequest
	}
	var ws []waiting
	now := time.Now()
	results := make([][]PeerResult, len(b.Coupons))
	for i, pc := range b.Coupons {
		results[i] = make([]PeerResult, len(pc.Requests))
		fill := func(label string) {
			for j := range results[i] {
				results[i][j].Result = label
			}
		}
		st, err := s.state(ctx, pc.Code)
		if err != nil {
			fill(peerResult(err))
			continue
		}
		st.mu.Lock()
		if !pc.Relay && (!(st.owner || st.acquiring) || s.draining.Load()) {
			st.mu.Unlock()
			fill(resultMisdirected)
			continue
		}
		for j, pr := range pc.Requests {
			at := pr.Arrived
			if earliest := now.Add(-s.cfg.LockWait); at.Before(earliest) {
				at = earliest
			}
			if at.After(now) {
				at = now
			}
			r, known := s.enqueueLocked(ctx, st, pr.User, at, pr.Wallet)
			if known != nil {
				results[i][j].Result = peerResult(known)
				continue
			}
			r.forwarded, r.relayed = !pc.Relay, pc.Relay
			if pr.Trace.IsValid() && s.cfg.Tracer != nil {
				r.span = pr.Trace // the owner's batch links to the request's span at its sender
			}
			ws = append(ws, waiting{i, j, st, r})
		}
		st.mu.Unlock()
	}
	for _, w := range ws {
		s.observeArrival(now, w.r.arrived)
		out := s.await(ctx, w.r)
		if out.err != nil && w.r.uncertain.Load() { // a relayed request this instance forwarded
			out = s.answerUncertain(ctx, w.st, w.r, out)
		}
		// Counted in the issue metrics by the sender, which answers the client.
		results[w.i][w.j] = PeerResult{Result: peerResult(out.err), Entry: out.entry}
		if out.trace != nil {
			results[w.i][w.j].Batch = out.trace.span
		}
	}
	return results
}
