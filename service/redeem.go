package service

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Redemption is a wallet entry used on an order: the buyer pays the order amount less the
// discount (never below 0), the seller receives the whole order amount.
type Redemption struct {
	WalletID       uuid.UUID
	OrderID        string
	OrderAmount    int64
	DiscountAmount int64
	BuyerPays      int64
	SellerReceives int64
	RedeemedAt     time.Time
}

const maxOrderIDLength = 128

// Redeem uses wallet entry walletID of userID on an order. Only the owner may (ErrNotOwner),
// before the entry expires (ErrExpired), on an order of at least the coupon's minimum
// (ErrOrderBelowMinimum), and once: the same order again gets the same redemption, another order
// ErrAlreadyRedeemed. Of concurrent redemptions of one entry exactly one wins.
func (s *Service) Redeem(ctx context.Context, walletID, userID uuid.UUID, orderID string, orderAmount int64) (Redemption, error) {
	switch {
	case orderID == "" || len(orderID) > maxOrderIDLength || !printable(orderID):
		return Redemption{}, invalid("orderId must be 1 to %d printable characters", maxOrderIDLength)
	case orderAmount < 0 || orderAmount > maxAmount:
		return Redemption{}, invalid("orderAmount must be between 0 and %d", int64(maxAmount))
	}
	r, err := s.repo.Redeem(ctx, walletID, userID, orderID, orderAmount, s.now())
	result := "redeemed"
	if err != nil {
		err = s.translate(err)
		result = redeemResultOf(err)
	}
	s.metrics.Redemptions.WithLabelValues(result).Inc()
	if err != nil {
		if result == "error" {
			s.log.ErrorContext(ctx, "redeem failed", "wallet", walletID, "err", err)
		}
		return Redemption{}, fmt.Errorf("redeem %s: %w", walletID, err)
	}
	return Redemption{
		WalletID: r.WalletID, OrderID: r.OrderID, OrderAmount: r.OrderAmount, DiscountAmount: r.DiscountAmount,
		BuyerPays: max(r.OrderAmount-r.DiscountAmount, 0), SellerReceives: r.OrderAmount, RedeemedAt: r.RedeemedAt,
	}, nil
}

func redeemResultOf(err error) string {
	for _, k := range []struct {
		err    error
		result string
	}{
		{ErrWalletNotFound, "not_found"}, {ErrNotOwner, "not_owner"}, {ErrExpired, "expired"},
		{ErrOrderBelowMinimum, "below_minimum"}, {ErrAlreadyRedeemed, "already_redeemed"},
		{ErrUnavailable, "unavailable"},
	} {
		if errors.Is(err, k.err) {
			return k.result
		}
	}
	return "error"
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return utf8.ValidString(s)
}

// WalletStatus filters a user's wallet.
type WalletStatus string

// Wallet filters: usable entries are neither redeemed nor expired; a redeemed entry counts as
// redeemed whether or not it has expired since.
const (
	WalletAll      WalletStatus = ""
	WalletUsable   WalletStatus = "usable"
	WalletRedeemed WalletStatus = "redeemed"
	WalletExpired  WalletStatus = "expired"
)

// ParseWalletStatus parses the ?status= filter of a wallet listing.
func ParseWalletStatus(s string) (WalletStatus, error) {
	switch st := WalletStatus(s); st {
	case WalletAll, WalletUsable, WalletRedeemed, WalletExpired:
		return st, nil
	}
	return "", invalid("status must be usable, redeemed or expired")
}

// statusOf is the entry's status at now.
func statusOf(e WalletEntry, now time.Time) WalletStatus {
	switch {
	case e.RedeemedAt != nil:
		return WalletRedeemed
	case !now.Before(e.ExpiresAt):
		return WalletExpired
	}
	return WalletUsable
}
