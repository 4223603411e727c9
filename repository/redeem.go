package repository

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Errors of a redemption; test them with errors.Is.
var (
	ErrWalletNotFound     = errors.New("wallet entry not found")
	ErrNotOwner           = errors.New("wallet entry belongs to another user")
	ErrExpired            = errors.New("wallet entry expired")
	ErrOrderBelowMinimum  = errors.New("order below the coupon's minimum")
	ErrAlreadyRedeemed    = errors.New("wallet entry redeemed for another order")
	errRedemptionUnsolved = errors.New("redemption refused for no known reason")
)

// Redemption is a wallet entry used on an order.
type Redemption struct {
	WalletID       uuid.UUID
	OrderID        string
	OrderAmount    int64
	DiscountAmount int64
	RedeemedAt     time.Time
}

// redeemSQL marks the entry redeemed when every condition holds. Under READ COMMITTED, of
// concurrent redemptions of one entry the first to lock the row wins; the others wait for it,
// find redeemed_at set and update nothing.
const redeemSQL = `
UPDATE coupon_wallet w SET redeemed_at = $5, order_id = $3, order_amount = $4
  FROM coupon c
 WHERE w.id = $1 AND c.id = w.coupon_id AND w.user_id = $2 AND w.redeemed_at IS NULL
   AND w.expires_at > $5 AND $4 >= c.min_order_amount
RETURNING c.discount_amount, w.redeemed_at`

// Redeem uses wallet entry walletID of userID on order orderID of orderAmount at time now. The
// same order again returns the first redemption (idempotent); otherwise the entry must be the
// user's (ErrNotOwner), unredeemed (ErrAlreadyRedeemed), unexpired at now (ErrExpired) and the
// order at least the coupon's minimum (ErrOrderBelowMinimum).
func (r *Repository) Redeem(ctx context.Context, walletID, userID uuid.UUID, orderID string, orderAmount int64, now time.Time) (Redemption, error) {
	red := Redemption{WalletID: walletID, OrderID: orderID, OrderAmount: orderAmount}
	err := r.pool.QueryRow(ctx, redeemSQL, walletID, userID, orderID, orderAmount, now).Scan(&red.DiscountAmount, &red.RedeemedAt)
	if err == nil {
		return red, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Redemption{}, translate("redeem", err)
	}
	// Nothing updated: a new statement sees the state a concurrent winner committed.
	var (
		owner          uuid.UUID
		expiresAt      time.Time
		redeemedAt     *time.Time
		storedOrder    *string
		storedAmount   *int64
		discount, minm int64
	)
	err = r.pool.QueryRow(ctx, `SELECT w.user_id, w.expires_at, w.redeemed_at, w.order_id, w.order_amount,
			c.discount_amount, c.min_order_amount
		FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id WHERE w.id = $1`, walletID).
		Scan(&owner, &expiresAt, &redeemedAt, &storedOrder, &storedAmount, &discount, &minm)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Redemption{}, fmt.Errorf("redeem %s: %w", walletID, ErrWalletNotFound)
	case err != nil:
		return Redemption{}, translate("redeem", err)
	case owner != userID:
		return Redemption{}, fmt.Errorf("redeem %s: %w", walletID, ErrNotOwner)
	case redeemedAt != nil && *storedOrder == orderID:
		return Redemption{WalletID: walletID, OrderID: orderID, OrderAmount: *storedAmount,
			DiscountAmount: discount, RedeemedAt: *redeemedAt}, nil
	case redeemedAt != nil:
		return Redemption{}, fmt.Errorf("redeem %s: %w", walletID, ErrAlreadyRedeemed)
	case !expiresAt.After(now):
		return Redemption{}, fmt.Errorf("redeem %s: expired at %s: %w", walletID, expiresAt.UTC().Format(time.RFC3339), ErrExpired)
	case orderAmount < minm:
		return Redemption{}, fmt.Errorf("redeem %s: order %d, minimum %d: %w", walletID, orderAmount, minm, ErrOrderBelowMinimum)
	}
	return Redemption{}, fmt.Errorf("redeem %s: %w", walletID, errRedemptionUnsolved)
}
