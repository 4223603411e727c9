package handler

import (
	"errors"
	"fmt"

	"couponsvc/domain"
	"couponsvc/internal/arrival"
	"couponsvc/internal/auth"
	"couponsvc/service"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// Who is asking. In identity mode (a verifier configured) every user route needs a bearer token
// that the verifier accepts, and the user is the token's; in demo mode the user is whoever the
// request says.

// callerKey is where identify keeps the verified identity in the gin context.
const callerKey = "couponsvc.caller"

// identify verifies the request's bearer token in identity mode and keeps the caller's identity
// for the handler. A request without a valid token is answered 401 here, before any decoding,
// PostgreSQL or Redis work. In demo mode it does nothing.
func (h *Handler) identify(c *gin.Context) {
	if h.verifier == nil {
		return
	}
	h.verify(c, nil)
}

// identifyIssuer is identify for the issue route: an answer that does not depend on who asks
// (the coupon sold out, closed, not open: service.Refusal, from the instance's cache) is given
// before the token's signature is checked, so that the crowd of a sold-out coupon costs what it
// costs in demo mode. Everything else is verified as identify does.
func (h *Handler) identifyIssuer(c *gin.Context) {
	if h.verifier == nil {
		return
	}
	claimed, ok := h.verifier.Claimed(c.GetHeader("Authorization"))
	if !ok { // no token of a JWT's shape: identify says why (401)
		h.verify(c, nil)
		return
	}
	ctx := c.Request.Context()
	code := c.Param("code")
	refusal, verify := h.svc.Refusal(service.WithArrival(ctx, arrival.Of(ctx)), code, claimed)
	if refusal != nil && !verify {
		h.writeServiceError(c, refusal)
		return
	}
	if refusal == nil {
		h.verify(c, nil)
		return
	}
	// Sold out, and the claimed user holds the coupon: a verified holder is told so (409, by
	// the full path); any other request gets what a non-holder gets.
	h.verify(c, func() {
		h.svc.Answered(ctx, code, claimed, refusal)
		h.writeServiceError(c, refusal)
	})
}

// verify verifies the request's bearer token and keeps the caller's identity for the handler.
// A token that fails is counted, and answered 401, or by refused when there is one (see
// identifyIssuer).
func (h *Handler) verify(c *gin.Context, refused func()) {
	id, err := h.verifier.Verify(c.Request.Context(), c.GetHeader("Authorization"))
	if err != nil {
		var e *auth.Error
		if !errors.As(err, &e) {
			e = &auth.Error{Reason: auth.ReasonClaims, Message: "the bearer token could not be verified", Err: err}
		}
		h.metrics.AuthFailures.WithLabelValues(e.Reason).Inc()
		h.log.DebugContext(c.Request.Context(), "token refused", "reason", e.Reason, "err", err)
		if refused != nil {
			refused()
			return
		}
		// RFC 6750 section 3: no error code when the request had no bearer token at all.
		challenge := `Bearer realm="couponsvc"`
		if !e.Missing() {
			challenge += `, error="invalid_token", error_description="` + e.Message + `"`
		}
		c.Header("WWW-Authenticate", challenge)
		writeError(c, domain.ErrUnauthorized, e.Message)
		return
	}
	c.Set(callerKey, id)
}

// callerOf is the verified identity of the request (ok false in demo mode).
func callerOf(c *gin.Context) (auth.Identity, bool) {
	v, ok := c.Get(callerKey)
	if !ok {
		return auth.Identity{}, false
	}
	id, ok := v.(auth.Identity)
	return id, ok
}

// userFor is the user a request acts for: the body's userId in demo mode (required); in
// identity mode the caller, and a userId in the body, when there is one, must be the caller's
// (errForbidden otherwise).
func userFor(c *gin.Context, bodyUserID string) (uuid.UUID, error) {
	caller, identified := callerOf(c)
	if bodyUserID == "" {
		if identified {
			return caller.User, nil
		}
		return uuid.Nil, errMissing("userId")
	}
	id, err := service.ParseUserID(bodyUserID)
	if err != nil {
		return uuid.Nil, err
	}
	if identified && id != caller.User {
		return uuid.Nil, errForbidden("userId is not the user of the bearer token")
	}
	return id, nil
}

// errForbidden is a request a verified caller may not make: 403 FORBIDDEN.
func errForbidden(why string) error { return fmt.Errorf("%w: %s", domain.ErrForbidden, why) }

// myWallet godoc
//
//	@Summary		The caller's coupons (identity mode)
//	@Description	Identity mode: the wallet of the bearer token's user. In demo mode there is no caller, and "me" is not a user id (400).
//	@Tags			wallet
//	@Produce		json
//	@Security		BearerAuth
//	@Param			status	query		string	false	"only entries in this status (usable = neither redeemed nor expired)"	Enums(usable, redeemed, expired)
//	@Success		200		{array}		WalletEntryResponse
//	@Failure		400		{object}	ErrorInvalidRequest	"INVALID_REQUEST"
//	@Failure		401		{object}	ErrorUnauthorized	"UNAUTHORIZED (identity mode; with WWW-Authenticate)"
//	@Failure		429		{object}	ErrorTooManyRequests	"TOO_MANY_REQUESTS (with Retry-After)"
//	@Failure		503		{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router			/api/v1/users/me/coupons [get]
func (h *Handler) myWallet(c *gin.Context) {
	caller, ok := callerOf(c)
	if !ok {
		h.writeServiceError(c, fmt.Errorf(`%w: userId must be a UUID like 3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f ("me" names the caller in identity mode only)`, domain.ErrInvalid))
		return
	}
	h.wallet(c, caller.User)
}
