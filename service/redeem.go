package service

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"unicode"
	"unicode/utf8"

	"couponsvc/engine"

	"github.com/google/uuid"
)

const maxOrderIDLength = 128

// Redeem uses wallet entry walletID of userID on an order. Only the owner may (domain.ErrNotOwner),
// before the entry expires (domain.ErrExpired), on an order of at least the coupon's minimum
// (domain.ErrOrderBelowMinimum), and once: the same order again gets the same redemption, another order
// domain.ErrAlreadyRedeemed. Of concurrent redemptions of one entry exactly one wins.
func (s *Service) Redeem(ctx context.Context, walletID, userID uuid.UUID, orderID string, orderAmount int64) (domain.Redemption, error) {
	switch {
	case orderID == "" || len(orderID) > maxOrderIDLength || !printable(orderID):
		return domain.Redemption{}, invalid("orderId must be 1 to %d printable characters", maxOrderIDLength)
	case orderAmount < 0 || orderAmount > maxAmount:
		return domain.Redemption{}, invalid("orderAmount must be between 0 and %d", int64(maxAmount))
	}
	r, err := s.repo.Redeem(ctx, walletID, userID, orderID, orderAmount)
	result := "redeemed"
	if err != nil {
		err = engine.Translate(err)
		result = resultOf(err)
	}
	s.metrics.Redemptions.WithLabelValues(result).Inc()
	if err != nil {
		if result == "error" {
			s.log.ErrorContext(ctx, "redeem failed", "wallet", walletID, "err", err)
		}
		return domain.Redemption{}, fmt.Errorf("redeem %s: %w", walletID, err)
	}
	return domain.Redemption{
		WalletID: r.WalletID, OrderID: r.OrderID, OrderAmount: r.OrderAmount, DiscountAmount: r.DiscountAmount,
		BuyerPays: max(r.OrderAmount-r.DiscountAmount, 0), SellerReceives: r.OrderAmount, RedeemedAt: r.RedeemedAt,
	}, nil
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return utf8.ValidString(s)
}
