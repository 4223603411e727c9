package service

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"couponsvc/domain"
	"couponsvc/engine"
	"couponsvc/internal/testenv"

	"github.com/google/uuid"
)

// observedRepo is the real repository, counting the user reads that reach it and holding the
// wallet reads while hold is open.
type observedRepo struct {
	Repository
	lists, wallets atomic.Int64
	hold           chan struct{} // nil: none held
}

func (r *observedRepo) ListCoupons(ctx context.Context) ([]domain.Coupon, error) {
	r.lists.Add(1)
	return r.Repository.ListCoupons(ctx)
}

func (r *observedRepo) UserWallet(ctx context.Context, user uuid.UUID) ([]domain.WalletEntry, error) {
	r.wallets.Add(1)
	if r.hold != nil {
		<-r.hold
	}
	return r.Repository.UserWallet(ctx, user)
}

// A crowd polling the coupons costs PostgreSQL one query, not one each; a client reads its own
// issue at once; a coupon created elsewhere a moment ago is found.
func TestCouponReadsFromSnapshot(t *testing.T) {
	st := newStack(t)
	repo := &observedRepo{Repository: st.repo(t)}
	s := st.serviceWith(t, repo, testenv.NewClock(time.Now()), false, Config{Engine: engine.Config{MetaRefresh: time.Hour}})
	mustCreate(t, s, domain.Coupon{Code: "POLL", Name: "poll", DiscountAmount: 1, TotalQuantity: 100, ValidDays: 1, OpensAt: time.Now().Add(-time.Hour)})
	ctx := context.Background()
	if _, err := s.ListCoupons(ctx); err != nil {
		t.Fatal(err)
	}
	before := repo.lists.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 2000)
	for i := range 2000 {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = s.GetCoupon(ctx, "POLL")
			} else {
				_, err = s.ListCoupons(ctx)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	testenv.Wait(t, &wg, 30*time.Second, "2,000 concurrent coupon reads end")
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// (One may run: the background work (Run) may have changed something meanwhile.)
	if n := repo.lists.Load() - before; n > 1 {
		t.Errorf("2,000 reads of an unchanged coupon ran %d queries, want at most 1 (the snapshot)", n)
	}
	for i := range 5 {
		if _, err := s.Issue(ctx, "POLL", uuid.New()); err != nil {
			t.Fatal(err)
		}
		c, err := s.GetCoupon(ctx, "POLL")
		if err != nil || c.IssuedQuantity != i+1 {
			t.Fatalf("after issue %d: %+v %v", i+1, c, err)
		}
	}
	// Created behind this instance's back (another instance, its notice lost): found.
	if _, err := repo.CreateCoupon(ctx, domain.Coupon{Code: "ELSEWHERE", Name: "x", DiscountAmount: 1, TotalQuantity: 3}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.GetCoupon(ctx, "ELSEWHERE"); err != nil || c.TotalQuantity != 3 {
		t.Fatalf("a coupon created elsewhere: %+v %v", c, err)
	}
	if _, err := s.GetCoupon(ctx, "NOSUCH"); !errors.Is(err, domain.ErrCouponNotFound) {
		t.Fatalf("unknown code: %v", err)
	}
}

// Wallet reads take at most ReadConns of PostgreSQL's connections: with them all held, more
// readers wait (until their context ends) while issues go on.
func TestWalletReadsBounded(t *testing.T) {
	st := newStack(t)
	repo := &observedRepo{Repository: st.repo(t), hold: make(chan struct{})}
	s := st.serviceWith(t, repo, testenv.NewClock(time.Now()), false, Config{ReadConns: 2})
	mustCreate(t, s, domain.Coupon{Code: "BUSY", Name: "busy", DiscountAmount: 1, TotalQuantity: 100, ValidDays: 1, OpensAt: time.Now().Add(-time.Hour)})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := s.UserWallet(ctx, uuid.New(), WalletAll); err != nil {
				t.Error(err)
			}
		})
	}
	testenv.WaitFor(t, 5*time.Second, "two wallet reads reach PostgreSQL", func() bool { return repo.wallets.Load() == 2 })
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := s.UserWallet(short, uuid.New(), WalletAll); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a third reader with both read connections taken: %v, want to wait until its deadline", err)
	}
	if n := repo.wallets.Load(); n != 2 {
		t.Errorf("%d wallet reads reached PostgreSQL, want 2 (ReadConns)", n)
	}
	for i := range 20 {
		if _, err := s.Issue(ctx, "BUSY", uuid.New()); err != nil {
			t.Fatalf("issue %d while the reads hold their connections: %v", i, err)
		}
	}
	close(repo.hold)
	testenv.Wait(t, &wg, 10*time.Second, "the held wallet reads end")
}
