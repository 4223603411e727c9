package service

import (
	"couponsvc/domain"
	"couponsvc/internal/testenv"

	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Redemption checks expiry by PostgreSQL's clock, the one that set expiresAt, whatever the
// instance's clock says; the wallet's status filter reads the instance's clock.
func TestRedeemExpiryAndWalletStatus(t *testing.T) {
	st := newStack(t)
	c := testenv.NewClock(time.Now())
	s := st.service(t, c, false, Config{})
	mustCreate(t, s, domain.Coupon{Code: "DAY", Name: "one day", DiscountAmount: 3000, TotalQuantity: 10, ValidDays: 1,
		OpensAt: time.Now().Add(-time.Hour), MinOrderAmount: 10000})
	ctx := context.Background()
	u1, u2 := uuid.New(), uuid.New()
	e1, err := s.Issue(ctx, "DAY", u1)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := s.Issue(ctx, "DAY", u2)
	if err != nil {
		t.Fatal(err)
	}
	status := func(user uuid.UUID, want WalletStatus) {
		t.Helper()
		for _, st := range []WalletStatus{WalletUsable, WalletRedeemed, WalletExpired} {
			w, err := s.UserWallet(ctx, user, st)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(w) == 1; got != (st == want) {
				t.Errorf("at %v, ?status=%s lists %d entries; the entry is %s", c.Now(), st, len(w), want)
			}
		}
	}
	c.Set(e1.ExpiresAt.Add(-time.Millisecond))
	status(u1, WalletUsable)
	r, err := s.Redeem(ctx, e1.ID, u1, "order-1", 12000)
	if err != nil || r.BuyerPays != 9000 || r.SellerReceives != 12000 || r.DiscountAmount != 3000 {
		t.Fatalf("redeem before expiry: %+v %v", r, err)
	}
	status(u1, WalletRedeemed)
	// e2 expires now by PostgreSQL's clock; the instance's clock is an hour behind.
	var expires time.Time
	pool, err := pgxpool.New(ctx, st.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pool.QueryRow(ctx, `UPDATE coupon_wallet SET expires_at = now() WHERE id = $1 RETURNING expires_at`, e2.ID).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	c.Set(expires.Add(-time.Hour))
	if _, err := s.Redeem(ctx, e2.ID, u2, "order-2", 12000); !errors.Is(err, domain.ErrExpired) {
		t.Fatalf("redeem after expiry by PostgreSQL's clock, the instance's an hour behind: %v", err)
	}
	c.Set(expires)
	status(u2, WalletExpired)
	c.Set(e1.ExpiresAt.Add(time.Hour)) // redeemed stays redeemed, and a retry still answers the same
	status(u1, WalletRedeemed)
	again, err := s.Redeem(ctx, e1.ID, u1, "order-1", 12000)
	if err != nil || again != r {
		t.Fatalf("retry after expiry: %+v %v, first %+v", again, err, r)
	}
}
