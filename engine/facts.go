package engine

import (
	"context"
	"strings"

	"github.com/google/uuid"
)

// Facts shared between instances.
//
// A committed fact decides a request without the lock: a user who holds a coupon gets 409, and
// once a coupon is sold out with its complete holder set known, everyone else gets 410. Each
// instance learns the facts of its own batches; behind an Ingress, a user's retry usually
// reaches another instance, which without them would spend a batch slot (a transaction) to
// learn what is already committed. So after each batch an instance publishes what it learned
// on the facts bus (Redis pub/sub on every node), and every other instance records it:
//   - holders are recorded as they are: a wallet row, once committed, stays;
//   - a sold-out is only a hint: the receiver checks it with PostgreSQL, and only a holder
//     set read from PostgreSQL is final (loadHolders), so a stale or lost notice can cost a
//     transaction, never a wrong answer.
//
// A notice is "<sender> <code> <sold out: s or -> <user> <user> ...". With CLUSTER_KEY the bus
// drops notices that are not from an instance (package notify); either way a notice never
// records more holders than a batch commits or the coupon has.

// factsBacklog bounds the notices waiting to be published; past it they are dropped (the
// others then ask PostgreSQL), so a stalled Redis never holds up a batch.
const factsBacklog = 1024

// publishFacts tells the other instances what a batch of coupon code committed: the users who
// hold it, and whether it was found sold out. It does not wait for Redis: Run publishes.
func (s *Engine) publishFacts(code string, holders []uuid.UUID, soldOut bool) {
	if s.cfg.Facts == nil || (len(holders) == 0 && !soldOut) {
		return
	}
	var b strings.Builder
	b.Grow(len(s.id) + len(code) + 4 + len(holders)*37)
	b.WriteString(s.id)
	b.WriteByte(' ')
	b.WriteString(code)
	if soldOut {
		b.WriteString(" s")
	} else {
		b.WriteString(" -")
	}
	for _, u := range holders {
		b.WriteByte(' ')
		b.WriteString(u.String())
	}
	select {
	case s.factsOut <- b.String():
	default:
	}
}

// publishLoop publishes the notices publishFacts queued, until ctx ends.
func (s *Engine) publishLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-s.factsOut:
			if err := s.cfg.Facts.Publish(ctx, msg); err != nil && ctx.Err() == nil {
				s.log.Warn("publish issue facts", "err", err) // the others ask PostgreSQL instead
			}
		}
	}
}

// recordFacts records a notice of another instance. A sold-out is checked here, in the
// subscriber's goroutine: once per coupon, as after it the coupon is final.
func (s *Engine) recordFacts(ctx context.Context, msg string) {
	sender, rest, _ := strings.Cut(msg, " ")
	code, rest, _ := strings.Cut(rest, " ")
	flag, users, _ := strings.Cut(rest, " ")
	if sender == s.id {
		return
	}
	st := s.cached(code)
	if st == nil {
		return // loaded from PostgreSQL when first asked for
	}
	s.changes.Add(1)
	if users != "" {
		st.mu.Lock()
		n := 0
		for f := range strings.FieldsSeq(users) {
			// A batch commits at most MaxBatch holders, and a coupon has at most its stock:
			// a notice claiming more is not from an instance, and is not believed further.
			if n++; n > s.cfg.MaxBatch || len(st.holders) >= st.total {
				break
			}
			if u, err := uuid.Parse(f); err == nil {
				st.holders[u] = struct{}{}
			}
		}
		st.mu.Unlock()
	}
	if flag == "s" {
		s.confirmSoldOut(ctx, st)
	}
}

// confirmSoldOut checks a sold-out another instance reported with PostgreSQL and, when it
// holds, loads the final holder set, so that this instance answers the rest of the crowd
// from memory without a batch of its own.
func (s *Engine) confirmSoldOut(ctx context.Context, st *couponState) {
	st.mu.Lock()
	gen, final := st.gen, st.final
	st.mu.Unlock()
	if final {
		return
	}
	c, err := s.store.CouponByCode(ctx, st.coupon.Code)
	if err != nil || c.IssuedQuantity < c.TotalQuantity {
		return
	}
	st.mu.Lock()
	confirmed := st.gen == gen && st.total == c.TotalQuantity
	if confirmed {
		st.soldOut, st.remaining = true, 0
	}
	st.mu.Unlock()
	if confirmed {
		s.loadHolders(ctx, st, gen)
	}
}
