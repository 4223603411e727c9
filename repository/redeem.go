package repository

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

var errRedemptionUnsolved = errors.New("redemption refused for no known reason")

// redeemSQL marks the entry redeemed when every condition holds. Under READ COMMITTED, of
// concurrent redemptions of one entry the first to lock the row wins; the others wait for it,
// find redeemed_at set and update nothing. Expiry is by PostgreSQL's clock, the one that set
// expires_at, not by the instance's.
const redeemSQL = `
UPDATE coupon_wallet w SET redeemed_at = now(), order_id = $3, order_amount = $4
  FROM coupon c
 WHERE w.id = $1 AND c.id = w.coupon_id AND w.user_id = $2 AND w.redeemed_at IS NULL
   AND w.expires_at > now() AND $4 >= c.min_order_amount
RETURNING c.discount_amount, w.redeemed_at`

// Redeem uses wallet entry walletID of userID on order orderID of orderAmount now (PostgreSQL's
// clock), and
// returns the redemption without what the buyer pays (the service's rule). The
// same order again returns the first redemption (idempotent); otherwise the entry must be the
// user's (domain.ErrNotOwner), unredeemed (domain.ErrAlreadyRedeemed), unexpired (domain.ErrExpired) and the
// order at least the coupon's minimum (domain.ErrOrderBelowMinimum).
func (r *Repository) Redeem(ctx context.Context, walletID, userID uuid.UUID, orderID string, orderAmount int64) (domain.Redemption, error) {
	red := domain.Redemption{WalletID: walletID, OrderID: orderID, OrderAmount: orderAmount}
	err := r.pool.QueryRow(ctx, redeemSQL, walletID, userID, orderID, orderAmount).Scan(&red.DiscountAmount, &red.RedeemedAt)
	if err == nil {
		return red, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return domain.Redemption{}, translate("redeem", err)
	}
	// Nothing updated: a new statement sees the state a concurrent winner committed.
	var (
		owner          uuid.UUID
		expiresAt      time.Time
		expired        bool
		redeemedAt     *time.Time
		storedOrder    *string
		storedAmount   *int64
		discount, minm int64
	)
	err = r.pool.QueryRow(ctx, `SELECT w.user_id, w.expires_at, w.redeemed_at, w.order_id, w.order_amount,
			c.discount_amount, c.min_order_amount, w.expires_at <= now()
		FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id WHERE w.id = $1`, walletID).
		Scan(&owner, &expiresAt, &redeemedAt, &storedOrder, &storedAmount, &discount, &minm, &expired)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return domain.Redemption{}, fmt.Errorf("redeem %s: %w", walletID, domain.ErrWalletNotFound)
	case err != nil:
		return domain.Redemption{}, translate("redeem", err)
	case owner != userID:
		return domain.Redemption{}, fmt.Errorf("redeem %s: %w", walletID, domain.ErrNotOwner)
	case redeemedAt != nil && *storedOrder == orderID:
		return domain.Redemption{WalletID: walletID, OrderID: orderID, OrderAmount: *storedAmount,
			DiscountAmount: discount, RedeemedAt: *redeemedAt}, nil
	case redeemedAt != nil:
		return domain.Redemption{}, fmt.Errorf("redeem %s: %w", walletID, domain.ErrAlreadyRedeemed)
	case expired:
		return domain.Redemption{}, fmt.Errorf("redeem %s: expired at %s: %w", walletID, expiresAt.UTC().Format(time.RFC3339), domain.ErrExpired)
	case orderAmount < minm:
		return domain.Redemption{}, fmt.Errorf("redeem %s: order %d, minimum %d: %w", walletID, orderAmount, minm, domain.ErrOrderBelowMinimum)
	}
	return domain.Redemption{}, fmt.Errorf("redeem %s: %w", walletID, errRedemptionUnsolved)
}
