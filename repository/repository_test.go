package repository

import (
	"couponsvc/domain"
	"io"
	"net"

	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/testenv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newRepo(t testing.TB, dsn string) *Repository {
	t.Helper()
	pool, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return New(pool)
}

func migrated(t *testing.T) *Repository {
	t.Helper()
	r := newRepo(t, testenv.Database(t))
	if err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// The outcomes of issueOne as errors, for the tests' switches (IssueBatch reports outcomes).
var (
	errAlreadyIssued = errors.New("already issued")
	errSoldOut       = errors.New("sold out")
)

// issueOne is IssueBatch for a single request, its outcome as an error.
func issueOne(ctx context.Context, r *Repository, couponID, user uuid.UUID, fence int64) (domain.WalletEntry, error) {
	res, err := r.IssueBatch(ctx, couponID, fence, []uuid.UUID{user})
	if err != nil {
		return domain.WalletEntry{}, err
	}
	switch res[0].Outcome {
	case Issued:
		return res[0].Entry, nil
	case AlreadyIssued:
		return domain.WalletEntry{}, errAlreadyIssued
	case SoldOut:
		return domain.WalletEntry{}, errSoldOut
	}
	return domain.WalletEntry{}, errors.New("undecided")
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	dsn := testenv.Database(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ { // eight pods starting at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRepo(t, dsn)
			if err := r.Migrate(ctx); err != nil {
				errs <- err
				return
			}
			errs <- r.SeedDemo(ctx)
		}()
	}
	testenv.Wait(t, &wg, time.Minute, "eight concurrent Migrate and SeedDemo calls return")
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	r := newRepo(t, dsn)
	if err := r.Migrate(ctx); err != nil { // and once more, later
		t.Fatal(err)
	}
	cs, err := r.ListCoupons(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 || cs[0].Code != "A0001" || cs[0].TotalQuantity != 300 || cs[2].TotalQuantity != 10000 {
		t.Fatalf("seeded coupons: %+v", cs)
	}
}

func TestSchemaRefusesBrokenInvariants(t *testing.T) {
	r := migrated(t)
	ctx := context.Background()
	c, err := r.CreateCoupon(ctx, domain.Coupon{Code: "X1", Name: "x", DiscountAmount: 1, TotalQuantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	user := uuid.New()
	for _, tc := range []struct{ name, sql string }{
		{"over stock", `UPDATE coupon SET issued_quantity = 2 WHERE id = $1`},
		{"negative", `UPDATE coupon SET issued_quantity = -1 WHERE id = $1`},
		{"bad code", `UPDATE coupon SET code = 'a/../b' WHERE id = $1`},
	} {
		if _, err := r.pool.Exec(ctx, tc.sql, c.ID); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := r.pool.Exec(ctx, `INSERT INTO coupon_wallet (id, coupon_id, user_id) VALUES ($1, $2, $3), ($4, $2, $3)`,
		uuid.New(), c.ID, user, uuid.New()); err == nil {
		t.Error("two wallet rows for one (coupon, user) accepted")
	}
}

func TestIssueOutcomes(t *testing.T) {
	r := migrated(t)
	ctx := context.Background()
	c, err := r.CreateCoupon(ctx, domain.Coupon{Code: "T2", Name: "two", DiscountAmount: 500, TotalQuantity: 2})
	if err != nil {
		t.Fatal(err)
	}
	u1, u2, u3 := uuid.New(), uuid.New(), uuid.New()
	e, err := issueOne(ctx, r, c.ID, u1, 1)
	if err != nil || e.UserID != u1 || e.IssuedAt.IsZero() {
		t.Fatalf("first issue: %+v %v", e, err)
	}
	if _, err := issueOne(ctx, r, c.ID, u1, 1); !errors.Is(err, errAlreadyIssued) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := issueOne(ctx, r, c.ID, u2, 0); !errors.Is(err, ErrStaleFence) {
		t.Fatalf("stale token: %v", err)
	}
	if _, err := issueOne(ctx, r, c.ID, u2, 5); err != nil {
		t.Fatalf("second issue: %v", err)
	}
	if _, err := issueOne(ctx, r, c.ID, u3, 5); !errors.Is(err, errSoldOut) {
		t.Fatalf("third issue: %v", err)
	}
	if _, err := issueOne(ctx, r, c.ID, u1, 6); !errors.Is(err, errAlreadyIssued) {
		t.Fatalf("holder retrying after sell-out must get already-issued: %v", err)
	}
	got, err := r.CouponByCode(ctx, "T2")
	if err != nil || got.IssuedQuantity != 2 || got.FenceToken != 6 {
		t.Fatalf("coupon after issues: %+v %v", got, err)
	}
	w, err := r.UserWallet(ctx, u1)
	if err != nil || len(w) != 1 || w[0].CouponCode != "T2" || w[0].DiscountAmount != 500 {
		t.Fatalf("wallet: %+v %v", w, err)
	}
	if _, err := r.CouponByCode(ctx, "NOPE"); !errors.Is(err, domain.ErrCouponNotFound) {
		t.Fatalf("unknown code: %v", err)
	}
}

// Without any lock at all, the statement alone keeps the invariants under a crowd.
func TestIssueConcurrentWithoutLockKeepsInvariants(t *testing.T) {
	r := migrated(t)
	ctx := context.Background()
	c, err := r.CreateCoupon(ctx, domain.Coupon{Code: "CROWD", Name: "c", DiscountAmount: 1, TotalQuantity: 50})
	if err != nil {
		t.Fatal(err)
	}
	users := make([]uuid.UUID, 200)
	for i := range users {
		users[i] = uuid.New()
	}
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func(u uuid.UUID) {
			defer wg.Done()
			_, err := issueOne(ctx, r, c.ID, u, 1)
			k := "ok"
			switch {
			case errors.Is(err, errAlreadyIssued):
				k = "dup"
			case errors.Is(err, errSoldOut):
				k = "soldout"
			case err != nil:
				k = err.Error()
			}
			mu.Lock()
			counts[k]++
			mu.Unlock()
		}(users[i%len(users)])
	}
	testenv.Wait(t, &wg, time.Minute, "1,000 concurrent single-request batches return")
	if counts["ok"] != 50 || counts["ok"]+counts["dup"]+counts["soldout"] != 1000 {
		t.Fatalf("outcomes: %v", counts)
	}
	var rows, issued int
	if err := r.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM coupon_wallet WHERE coupon_id = $1), issued_quantity FROM coupon WHERE id = $1`, c.ID).Scan(&rows, &issued); err != nil {
		t.Fatal(err)
	}
	if rows != 50 || issued != 50 {
		t.Fatalf("rows %d issued %d", rows, issued)
	}
}

func TestUnavailableAndReconnect(t *testing.T) {
	pg := testenv.NewPostgres(t)
	r := newRepo(t, pg.DSN("postgres"))
	ctx := context.Background()
	if err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.SeedDemo(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := r.CouponByCode(ctx, "A0001")
	if err != nil {
		t.Fatal(err)
	}
	pg.Stop(t)
	tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := issueOne(tctx, r, c.ID, uuid.New(), 1); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("issue with PostgreSQL down: %v", err)
	}
	if err := r.Ping(tctx); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("ping with PostgreSQL down: %v", err)
	}
	pg.Start(t)
	if _, err := issueOne(ctx, r, c.ID, uuid.New(), 1); err != nil { // the pool reconnects by itself
		t.Fatalf("issue after restart: %v", err)
	}
	got, _ := r.CouponByCode(ctx, "A0001")
	if got.IssuedQuantity != 1 {
		t.Fatalf("issued after restart: %d", got.IssuedQuantity)
	}
}

// A batch resolves duplicates and the stock boundary in arrival order, in one transaction.
func TestIssueBatchArrivalOrder(t *testing.T) {
	r := migrated(t)
	ctx := context.Background()
	c, err := r.CreateCoupon(ctx, domain.Coupon{Code: "B3", Name: "three", DiscountAmount: 1, TotalQuantity: 3})
	if err != nil {
		t.Fatal(err)
	}
	old, a, b, d, e := uuid.New(), uuid.New(), uuid.New(), uuid.New(), uuid.New()
	if _, err := issueOne(ctx, r, c.ID, old, 1); err != nil {
		t.Fatal(err)
	}
	// old holds one already; a asks twice; 2 left for a, b (d and e come too late).
	res, err := r.IssueBatch(ctx, c.ID, 2, []uuid.UUID{old, a, a, b, d, old, e})
	if err != nil {
		t.Fatal(err)
	}
	want := []Outcome{AlreadyIssued, Issued, AlreadyIssued, Issued, SoldOut, AlreadyIssued, SoldOut}
	for i, w := range want {
		if res[i].Outcome != w {
			t.Fatalf("request %d: outcome %d, want %d (all: %+v)", i, res[i].Outcome, w, res)
		}
	}
	if res[1].Entry.UserID != a || res[3].Entry.UserID != b || res[1].Entry.IssuedAt.IsZero() {
		t.Fatalf("entries: %+v %+v", res[1].Entry, res[3].Entry)
	}
	got, _ := r.CouponByCode(ctx, "B3")
	holders, _ := r.HoldersOf(ctx, c.ID)
	if got.IssuedQuantity != 3 || len(holders) != 3 {
		t.Fatalf("issued %d, holders %d", got.IssuedQuantity, len(holders))
	}
	if _, err := r.IssueBatch(ctx, c.ID, 1, []uuid.UUID{uuid.New()}); !errors.Is(err, ErrStaleFence) {
		t.Fatalf("stale batch: %v", err)
	}
}

// Several coupons' batches in one transaction: each is decided as alone, a stale token voids
// only its own batch, and two groups running at once over the same coupons in opposite orders
// do not deadlock (the statements run in coupon id order).
func TestIssueBatchesGroupCommit(t *testing.T) {
	r := migrated(t)
	ctx := context.Background()
	var coupons []domain.Coupon
	for i := range 6 {
		c, err := r.CreateCoupon(ctx, domain.Coupon{Code: fmt.Sprintf("G%d", i), Name: "g", DiscountAmount: 1, TotalQuantity: 2})
		if err != nil {
			t.Fatal(err)
		}
		coupons = append(coupons, c)
	}
	if _, err := issueOne(ctx, r, coupons[5].ID, uuid.New(), 7); err != nil { // G5 accepted token 7
		t.Fatal(err)
	}
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	out := r.IssueBatches(ctx, []Batch{
		{CouponID: coupons[0].ID, Fence: 1, Users: []uuid.UUID{a, b, c}},
		{CouponID: coupons[5].ID, Fence: 3, Users: []uuid.UUID{a}}, // stale
		{CouponID: coupons[1].ID, Fence: 1, Users: []uuid.UUID{a, a}},
	})
	want := [][]Outcome{{Issued, Issued, SoldOut}, nil, {Issued, AlreadyIssued}}
	for i, w := range want {
		if w == nil {
			if !errors.Is(out[i].Err, ErrStaleFence) {
				t.Fatalf("batch %d: %v, want a stale token", i, out[i].Err)
			}
			continue
		}
		if out[i].Err != nil {
			t.Fatalf("batch %d: %v", i, out[i].Err)
		}
		for j, o := range w {
			if out[i].Results[j].Outcome != o {
				t.Fatalf("batch %d request %d: outcome %d, want %d", i, j, out[i].Results[j].Outcome, o)
			}
		}
	}
	if out[0].Results[0].Entry.UserID != a || out[2].Results[0].Entry.CouponID != coupons[1].ID {
		t.Fatalf("entries: %+v %+v", out[0].Results[0].Entry, out[2].Results[0].Entry)
	}
	if g5, _ := r.CouponByCode(ctx, "G5"); g5.IssuedQuantity != 1 {
		t.Fatalf("the stale batch wrote: G5 issued %d", g5.IssuedQuantity)
	}

	// Groups over G2..G4 in opposite orders, many at once.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for k := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs := []Batch{{CouponID: coupons[2].ID, Fence: 1}, {CouponID: coupons[3].ID, Fence: 1}, {CouponID: coupons[4].ID, Fence: 1}}
			if k%2 == 1 {
				slices.Reverse(bs)
			}
			for i := range bs {
				bs[i].Users = []uuid.UUID{uuid.New()}
			}
			for _, o := range r.IssueBatches(ctx, bs) {
				if o.Err != nil {
					errs <- o.Err
				}
			}
		}()
	}
	testenv.Wait(t, &wg, 30*time.Second, "40 groups over the same coupons end")
	close(errs)
	for err := range errs {
		t.Fatalf("a group failed: %v", err)
	}
	for _, code := range []string{"G2", "G3", "G4"} {
		if g, _ := r.CouponByCode(ctx, code); g.IssuedQuantity != 2 {
			t.Fatalf("%s issued %d, want its stock 2", code, g.IssuedQuantity)
		}
	}
}

// A batch whose context ends while its statement runs (the lock was lost, the transaction
// timed out) reports what PostgreSQL did: never "nothing issued" for a statement that then
// commits anyway. Here the statement waits for the coupon row, its context ends, and the row
// is released at once: the statement either completes or is cancelled on the server, and the
// batch must say which.
func TestIssueBatchCancelledReportsWhatHappened(t *testing.T) {
	r := migrated(t)
	ctx := context.Background()
	for round := range 20 {
		c, err := r.CreateCoupon(ctx, domain.Coupon{Code: fmt.Sprintf("CX%d", round), Name: "cancelled", DiscountAmount: 1, TotalQuantity: 10})
		if err != nil {
			t.Fatal(err)
		}
		// Another transaction holds the coupon row, as a batch of another instance would.
		holder, err := r.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := holder.Exec(ctx, `SELECT 1 FROM coupon WHERE id = $1 FOR UPDATE`, c.ID); err != nil {
			t.Fatal(err)
		}
		users := []uuid.UUID{uuid.New(), uuid.New()}
		bctx, cancel := context.WithCancel(ctx)
		type outcome struct {
			res []Result
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := r.IssueBatch(bctx, c.ID, 1, users)
			done <- outcome{res, err}
		}()
		time.Sleep(50 * time.Millisecond) // the statement now waits for the row
		cancel()
		if err := holder.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		out := testenv.Receive(t, done, 10*time.Second, "the cancelled batch's outcome")
		time.Sleep(100 * time.Millisecond) // whatever the server still does with it is done by now
		reported := 0
		if out.err == nil {
			for _, res := range out.res {
				if res.Outcome == Issued {
					reported++
				}
			}
		}
		var rows int
		if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM coupon_wallet WHERE coupon_id = $1`, c.ID).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != reported {
			t.Fatalf("round %d: the batch reported %d issued (err %v), PostgreSQL holds %d rows", round, reported, out.err, rows)
		}
	}
}

// PostgreSQL out of reach is UNAVAILABLE ("retry"); anything else, a bug included, is not.
func TestTranslate(t *testing.T) {
	for _, tc := range []struct {
		err         error
		unavailable bool
	}{
		{io.EOF, true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{context.DeadlineExceeded, true},
		{&pgconn.PgError{Code: "57P01"}, true}, // admin shutdown
		{&pgconn.PgError{Code: "08006"}, true}, // connection failure
		{&pgconn.PgError{Code: "23505"}, false},
		{context.Canceled, false},
		{errors.New("can't scan into dest[0]: cannot scan NULL into *int"), false},
	} {
		got := errors.Is(translate("op", tc.err), domain.ErrUnavailable)
		if got != tc.unavailable {
			t.Errorf("translate(%v): unavailable %v, want %v", tc.err, got, tc.unavailable)
		}
	}
}

// The batch statement itself refuses outside the coupon's window and while it is paused, by
// PostgreSQL's clock, whatever the caller believed: nothing is inserted and the counter does
// not move; in a group, only that coupon's batch is refused.
func TestIssueBatchRefusedByWindow(t *testing.T) {
	r := migrated(t)
	ctx := context.Background()
	mk := func(code string) domain.Coupon {
		c, err := r.CreateCoupon(ctx, domain.Coupon{Code: code, Name: code, DiscountAmount: 1, TotalQuantity: 5})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	open, soon, late, paused := mk("WOPEN"), mk("WSOON"), mk("WLATE"), mk("WPAUSED")
	for _, q := range []string{
		`UPDATE coupon SET opens_at = now() + interval '1 minute' WHERE code = 'WSOON'`,
		`UPDATE coupon SET opens_at = now() - interval '2 hours', closes_at = now() - interval '1 second' WHERE code = 'WLATE'`,
		`UPDATE coupon SET paused = true WHERE code = 'WPAUSED'`,
	} {
		if _, err := r.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	u := uuid.New()
	out := r.IssueBatches(ctx, []Batch{
		{CouponID: soon.ID, Fence: 1, Users: []uuid.UUID{u}},
		{CouponID: open.ID, Fence: 1, Users: []uuid.UUID{u}},
		{CouponID: late.ID, Fence: 1, Users: []uuid.UUID{u}},
		{CouponID: paused.ID, Fence: 1, Users: []uuid.UUID{u}},
	})
	for i, want := range []error{domain.ErrEventNotOpen, nil, domain.ErrEventClosed, domain.ErrEventClosed} {
		if !errors.Is(out[i].Err, want) || (want == nil && (out[i].Err != nil || out[i].Results[0].Outcome != Issued)) {
			t.Errorf("batch %d: %+v, want %v", i, out[i], want)
		}
	}
	if _, err := issueOne(ctx, r, soon.ID, uuid.New(), 2); !errors.Is(err, domain.ErrEventNotOpen) {
		t.Errorf("alone, not open: %v", err)
	}
	for _, c := range []domain.Coupon{soon, late, paused} {
		var issued, rows int
		if err := r.pool.QueryRow(ctx, `SELECT issued_quantity, (SELECT count(*) FROM coupon_wallet WHERE coupon_id = $1) FROM coupon WHERE id = $1`, c.ID).Scan(&issued, &rows); err != nil {
			t.Fatal(err)
		}
		if issued != 0 || rows != 0 {
			t.Errorf("%s: issued %d, %d rows after a refused batch", c.Code, issued, rows)
		}
	}
}
