package repository

import (
	"couponsvc/domain"

	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outcome is what became of one request of a batch.
type Outcome int

// Outcomes of a batch request.
const (
	Issued        Outcome = iota + 1 // a wallet row was inserted
	AlreadyIssued                    // the user held the coupon already (or asked twice in the batch)
	SoldOut                          // the stock ran out before this request's turn
	Retry                            // nothing was decided (the lock was lost meanwhile): ask again
)

// Result is the outcome of one batch request; Entry is set when Issued.
type Result struct {
	Outcome Outcome
	Entry   domain.WalletEntry
}

// issueBatchSQL issues coupon $1 to the users $3 (wallet ids $2), in the order given, as one
// statement and so one transaction, under fencing token $4:
//   - c locks the coupon row, but only for a token not older than the last one accepted, and
//     says whether the coupon's window refuses the batch (paused, closed or not open by
//     PostgreSQL's clock: the authority, whatever the instances' clocks or caches say);
//   - held are the users who already hold the coupon; fresh keeps the first request of each
//     other user; winners are the first `remaining` fresh requests in arrival order;
//   - expires_at is computed here, as the schema's trigger would (the trigger then has nothing
//     to look up, row by row);
//   - the insert skips a (coupon, user) that another transaction committed meanwhile (possible
//     only when a lock was lost), or a wallet id that is taken (ids chosen by another
//     instance: never trusted to be free), and the counter moves by the rows actually inserted, so
//     issued_quantity = count(rows) holds whatever happens, and the CHECK keeps it <= total;
//   - a refused window inserts nothing.
//
// The answer is one short row: the counts after the statement (NULL when the token was stale),
// the issue time (one for the whole transaction), the wallet ids inserted, the users who
// already held the coupon and the window's refusal (NULL when open). One row rather than a row per request:
// a reply that fits one read wakes the waiting goroutine once, and on a busy machine each
// wake-up waits its turn for a CPU.
const issueBatchSQL = `
WITH req AS (
    SELECT wid, uid, ord FROM unnest($2::uuid[], $3::uuid[]) WITH ORDINALITY AS r(wid, uid, ord)
), c AS (
    SELECT id, total_quantity - issued_quantity AS remaining, valid_days,
           CASE WHEN paused OR closes_at <= now() THEN 'closed' WHEN now() < opens_at THEN 'not_open' END AS refused
      FROM coupon WHERE id = $1 AND fence_token <= $4
       FOR UPDATE
), held AS (
    -- One unique-index probe per asking user: "user_id = ANY ($3)" let the planner scan all of
    -- the coupon's rows instead, a cost that grew with every coupon issued.
    SELECT w.user_id FROM unnest($3::uuid[]) AS a(uid)
      JOIN coupon_wallet w ON w.coupon_id = $1 AND w.user_id = a.uid
), fresh AS (
    SELECT DISTINCT ON (uid) wid, uid, ord FROM req
     WHERE uid NOT IN (SELECT user_id FROM held)
     ORDER BY uid, ord
), winners AS (
    SELECT wid, uid FROM fresh ORDER BY ord
     LIMIT coalesce((SELECT greatest(remaining, 0) FROM c WHERE refused IS NULL), 0)
), ins AS (
    INSERT INTO coupon_wallet (id, coupon_id, user_id, issued_at, expires_at)
    SELECT wid, $1, uid, now(), now() + (SELECT valid_days FROM c) * interval '24 hours' FROM winners
    ON CONFLICT DO NOTHING
    RETURNING id, issued_at
), upd AS (
    UPDATE coupon SET issued_quantity = issued_quantity + (SELECT count(*) FROM ins), fence_token = $4
     WHERE id = $1 AND EXISTS (SELECT 1 FROM c)
 RETURNING issued_quantity, total_quantity
)
SELECT (SELECT issued_quantity FROM upd), (SELECT total_quantity FROM upd),
       (SELECT max(issued_at) FROM ins),
       ARRAY(SELECT id FROM ins),
       ARRAY(SELECT user_id FROM held),
       (SELECT refused FROM c)`

// IssueBatch issues coupon couponID to each user of users, in that (arrival) order, in ONE
// transaction under lock grant fence, and returns one Result per user, or, issuing nothing,
// domain.ErrEventClosed or domain.ErrEventNotOpen when the coupon's window refuses the batch by
// PostgreSQL's clock (paused counts as closed). Duplicates are resolved
// in order (a user's first request may win, later ones are AlreadyIssued), and so is the stock
// boundary (the earliest fresh requests win). It returns ErrStaleFence when PostgreSQL already
// accepted a newer grant (nothing was written), domain.ErrUnavailable when PostgreSQL is unreachable.
//
// When the connection fails mid-statement the outcome is unknown, so IssueBatch looks the users'
// rows up again: a committed batch is reported as committed, never as an error.
func (r *Repository) IssueBatch(ctx context.Context, couponID uuid.UUID, fence int64, users []uuid.UUID) ([]Result, error) {
	out := r.IssueBatches(ctx, []Batch{{CouponID: couponID, Fence: fence, Users: users}})
	return out[0].Results, out[0].Err
}

// Batch is one coupon's batch of issue requests under one lock grant (see IssueBatch).
type Batch struct {
	CouponID uuid.UUID
	Fence    int64
	Users    []uuid.UUID
	// Wallets are the ids the requests' rows take if issued, one per user; nil: new ones.
	// A request sent again after an unknown outcome keeps its id, so that its row, if the
	// first attempt committed it, can be told from another request's (see the service).
	Wallets []uuid.UUID
}

// BatchOutcome is what IssueBatches made of one Batch: its Results, or the error IssueBatch
// would have returned.
type BatchOutcome struct {
	Results []Result
	Err     error
}

// batchRow is the issue statement's one-row answer.
type batchRow struct {
	issued, total *int
	at            *time.Time
	inserted      []uuid.UUID
	held          []uuid.UUID
	refused       *string
}

func (b *batchRow) dest() []any {
	return []any{&b.issued, &b.total, &b.at, &b.inserted, &b.held, &b.refused}
}

// IssueBatches issues several coupons' batches in ONE transaction, one commit for all (group
// commit across coupons: with many coupons open at once, PostgreSQL's commits, not its
// statements, are what limits them). The statements run in the order of the coupons' ids, so
// that two transactions never lock two coupon rows in opposite orders. Each batch is decided
// as IssueBatch decides it alone; a stale token voids only its own batch. An error of the
// transaction (rare: a constraint, PostgreSQL going away) is every batch's.
func (r *Repository) IssueBatches(ctx context.Context, batches []Batch) []BatchOutcome {
	out := make([]BatchOutcome, len(batches))
	rows := make([]batchRow, len(batches))
	wids := make([][]uuid.UUID, len(batches))
	for i, b := range batches {
		if len(b.Wallets) == len(b.Users) {
			wids[i] = b.Wallets
			continue
		}
		wids[i] = make([]uuid.UUID, len(b.Users))
		for j := range wids[i] {
			wids[i][j] = uuid.Must(uuid.NewV7())
		}
	}
	var err error
	if len(batches) == 1 {
		b := batches[0]
		err = r.pool.QueryRow(ctx, issueBatchSQL, b.CouponID, wids[0], b.Users, b.Fence).Scan(rows[0].dest()...)
	} else {
		order := make([]int, len(batches))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(x, y int) int { return bytes.Compare(batches[x].CouponID[:], batches[y].CouponID[:]) })
		err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			q := &pgx.Batch{}
			for _, i := range order {
				b := batches[i]
				q.Queue(issueBatchSQL, b.CouponID, wids[i], b.Users, b.Fence)
			}
			br := tx.SendBatch(ctx, q)
			for _, i := range order {
				if err := br.QueryRow().Scan(rows[i].dest()...); err != nil {
					br.Close()
					return err
				}
			}
			return br.Close()
		})
	}
	if err != nil {
		// Nothing sent (no connection): nothing was written. Otherwise PostgreSQL may have
		// committed the batch before the connection broke or the wait ended: the rows say; and
		// when they cannot be read either, the outcome is unknown, and said so.
		// An error PostgreSQL itself sent (shutting down, a constraint) says the statement failed:
		// nothing was written either.
		var pgErr *pgconn.PgError
		sent := !pgconn.SafeToRetry(err) && !errors.As(err, &pgErr)
		err = translate("issue batch", err)
		for i, b := range batches {
			if errors.Is(err, domain.ErrUnavailable) || ctx.Err() != nil {
				rctx, cancel := context.WithTimeout(context.Background(), resolveWithin)
				res, lerr := r.ResolveBatch(rctx, b.CouponID, b.Users, wids[i])
				cancel()
				if lerr == nil {
					out[i].Results = res
					continue
				}
				if sent {
					out[i].Err = fmt.Errorf("%w: %w", domain.ErrOutcomeUnknown, err)
					continue
				}
			}
			out[i].Err = err
		}
		return out
	}
	for i, b := range batches {
		out[i].Results, out[i].Err = r.decide(ctx, b, wids[i], rows[i])
	}
	return out
}

// decide turns a batch's statement answer into one Result per request.
func (r *Repository) decide(ctx context.Context, b Batch, wids []uuid.UUID, row batchRow) ([]Result, error) {
	if row.issued == nil || row.total == nil {
		return nil, r.whyNoCoupon(ctx, b.CouponID, b.Fence)
	}
	if row.refused != nil {
		if *row.refused == "not_open" {
			return nil, fmt.Errorf("issue batch: by PostgreSQL's clock: %w", domain.ErrEventNotOpen)
		}
		return nil, fmt.Errorf("issue batch: by PostgreSQL's clock: %w", domain.ErrEventClosed)
	}
	inserted := make(map[uuid.UUID]bool, len(row.inserted))
	for _, id := range row.inserted {
		inserted[id] = true
	}
	held := make(map[uuid.UUID]bool, len(row.held))
	for _, u := range row.held {
		held[u] = true
	}

	res := make([]Result, len(b.Users))
	won := make(map[uuid.UUID]bool, len(b.Users))
	for i, u := range b.Users {
		switch {
		case inserted[wids[i]]:
			res[i] = Result{Outcome: Issued, Entry: domain.WalletEntry{ID: wids[i], CouponID: b.CouponID, UserID: u, IssuedAt: *row.at}}
			won[u] = true
		case held[u] || won[u]:
			res[i] = Result{Outcome: AlreadyIssued}
		case *row.issued >= *row.total:
			res[i] = Result{Outcome: SoldOut}
		default:
			// A winner whose insert met a row committed meanwhile (the user now holds it),
			// or a request passed over because of that: nothing is decided for it.
			res[i] = Result{Outcome: Retry}
		}
	}
	// A winner skipped by ON CONFLICT is a user that holds the coupon now.
	for i, u := range b.Users {
		if res[i].Outcome == Retry {
			if ok, err := r.HasIssued(ctx, b.CouponID, u); err == nil && ok {
				res[i] = Result{Outcome: AlreadyIssued}
			}
		}
	}
	return res, nil
}

// whyNoCoupon explains a batch that found no coupon row to lock: gone, or a stale token.
func (r *Repository) whyNoCoupon(ctx context.Context, couponID uuid.UUID, fence int64) error {
	var last int64
	err := r.pool.QueryRow(ctx, `SELECT fence_token FROM coupon WHERE id = $1`, couponID).Scan(&last)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("issue batch: %w", domain.ErrCouponNotFound)
	case err != nil:
		return translate("issue batch", err)
	}
	return fmt.Errorf("issue batch: token %d, coupon already written with %d: %w", fence, last, ErrStaleFence)
}

// resolveWithin bounds the re-read of a batch whose statement broke off.
const resolveWithin = 2 * time.Second

// ResolveBatch decides a batch whose statement broke off, trying until ctx ends: each request
// whose wallet id is in PostgreSQL was issued; a user holding the coupon under another id
// already had it; the others were not issued (the statement was all or nothing).
func (r *Repository) ResolveBatch(ctx context.Context, couponID uuid.UUID, users, wids []uuid.UUID) ([]Result, error) {
	for {
		rows, err := r.pool.Query(ctx, `SELECT w.id, w.user_id, w.issued_at FROM unnest($2::uuid[]) AS a(uid)
			JOIN coupon_wallet w ON w.coupon_id = $1 AND w.user_id = a.uid`, couponID, users)
		if err == nil {
			type row struct {
				id uuid.UUID
				at time.Time
			}
			got := map[uuid.UUID]row{}
			for rows.Next() {
				var rw row
				var u uuid.UUID
				if err = rows.Scan(&rw.id, &u, &rw.at); err != nil {
					break
				}
				got[u] = rw
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
			if err == nil {
				res := make([]Result, len(users))
				for i, u := range users {
					rw, ok := got[u]
					switch {
					case ok && rw.id == wids[i]:
						res[i] = Result{Outcome: Issued, Entry: domain.WalletEntry{ID: rw.id, CouponID: couponID, UserID: u, IssuedAt: rw.at}}
					case ok:
						res[i] = Result{Outcome: AlreadyIssued}
					default:
						res[i] = Result{Outcome: Retry}
					}
				}
				return res, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
