package handler

import (
	"couponsvc/domain"
	"fmt"

	"net/http"
	"time"

	"couponsvc/service"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// RedeemRequest is the body of a redemption: the owner, the order and its amount. Demo mode:
// all three are required. Identity mode, the owner's token: userId may be omitted and must be the
// token's user; a service token with the redeem scope (an order service): userId names the buyer
// and is required, and the order amount is that service's word.
type RedeemRequest struct {
	UserID      string `json:"userId" example:"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"`
	OrderID     string `json:"orderId" example:"ORD-20261122-0001"`
	OrderAmount *int64 `json:"orderAmount" example:"25000"`
}

// RedemptionResponse is a wallet entry used on an order: the buyer pays orderAmount -
// discountAmount (not below 0), the seller receives the whole orderAmount.
type RedemptionResponse struct {
	WalletID       string    `json:"walletId" example:"01936b2e-7c1a-7d3e-9f00-0a1b2c3d4e5f"`
	OrderID        string    `json:"orderId" example:"ORD-20261122-0001"`
	OrderAmount    int64     `json:"orderAmount" example:"25000"`
	DiscountAmount int64     `json:"discountAmount" example:"3000"`
	BuyerPays      int64     `json:"buyerPays" example:"22000"`
	SellerReceives int64     `json:"sellerReceives" example:"25000"`
	RedeemedAt     time.Time `json:"redeemedAt" example:"2026-11-22T13:05:00.123Z"`
}

// redeem godoc
//
//	@Summary		Use a coupon on an order
//	@Description	Redeems the wallet entry on the order: only its owner, before it expires, on an order of at least the coupon's minOrderAmount. Idempotent per order: the same orderId again returns the same 200 body; another order gets 409. Of concurrent redemptions of one entry exactly one succeeds. Identity mode: the caller is the owner (bearer token of the owner; userId may be omitted and must be the token's user) or an order service whose token carries the redeem scope (AUTH_REDEEM_SCOPE, default coupons:redeem; userId names the buyer).
//	@Tags			wallet
//	@Accept			json
//	@Produce		json
//	@Security		BearerAuth
//	@Param			walletId	path		string			true	"wallet entry id (UUID)"	example(01936b2e-7c1a-7d3e-9f00-0a1b2c3d4e5f)
//	@Param			body		body		RedeemRequest	true	"owner and order"
//	@Success		200			{object}	RedemptionResponse
//	@Failure		400			{object}	ErrorInvalidRequest	"INVALID_REQUEST"
//	@Failure		401			{object}	ErrorUnauthorized	"UNAUTHORIZED (identity mode; with WWW-Authenticate)"
//	@Failure		403			{object}	ErrorNotOwner	"NOT_OWNER, or FORBIDDEN (identity mode: userId is not the token's user)"
//	@Failure		404			{object}	ErrorWalletNotFound	"WALLET_NOT_FOUND"
//	@Failure		409			{object}	ErrorAlreadyRedeemed	"ALREADY_REDEEMED (for another order)"
//	@Failure		410			{object}	ErrorExpired	"EXPIRED"
//	@Failure		422			{object}	ErrorOrderBelowMinimum	"ORDER_BELOW_MINIMUM"
//	@Failure		503			{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router			/api/v1/wallet/{walletId}/redeem [post]
func (h *Handler) redeem(c *gin.Context) {
	walletID, err := uuid.Parse(c.Param("walletId"))
	if err != nil || len(c.Param("walletId")) != 36 {
		h.writeServiceError(c, fmt.Errorf("%w: walletId must be a UUID", domain.ErrInvalid))
		return
	}
	var req RedeemRequest
	if err := decodeJSON(c, maxBodyBytes, &req); err != nil {
		h.writeServiceError(c, err)
		return
	}
	// An order service (identity mode, a token with the redeem scope) redeems for the buyer it
	// names; anyone else redeems as themselves (userFor).
	caller, identified := callerOf(c)
	byService := identified && caller.CanRedeem
	if err := required(field{"userId", req.UserID == "" && (!identified || byService)}, field{"orderId", req.OrderID == ""},
		field{"orderAmount", req.OrderAmount == nil}); err != nil {
		h.writeServiceError(c, err)
		return
	}
	var userID uuid.UUID
	if byService {
		userID, err = service.ParseUserID(req.UserID)
	} else {
		userID, err = userFor(c, req.UserID)
	}
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	r, err := h.svc.Redeem(c.Request.Context(), walletID, userID, req.OrderID, *req.OrderAmount)
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.JSON(http.StatusOK, RedemptionResponse{WalletID: r.WalletID.String(), OrderID: r.OrderID, OrderAmount: r.OrderAmount,
		DiscountAmount: r.DiscountAmount, BuyerPays: r.BuyerPays, SellerReceives: r.SellerReceives, RedeemedAt: r.RedeemedAt.UTC()})
}
