package handler

import (
	"couponsvc/domain"

	"net/http"

	"couponsvc/internal/peer"

	"github.com/gin-gonic/gin"
)

// peerBatch serves a batch of issue requests that another instance forwarded to this one as
// the coupon's owner, or relayed (package peer). It is not part of the public API: the
// Ingress does not route /internal.
func (h *Handler) peerBatch(c *gin.Context) {
	// ingress-nginx always sets X-Forwarded-For and X-Real-IP: a request bearing either came
	// through the Ingress (a path crafted to reach /internal through an /api/v1 rule), not
	// from another instance.
	if c.GetHeader("X-Forwarded-For") != "" || c.GetHeader("X-Real-IP") != "" {
		writeError(c, domain.ErrNoRoute, domain.ErrNoRoute.Message)
		return
	}
	b, err := peer.DecodeBatch(c.Request.Body)
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	body, err := peer.EncodeResults(h.svc.Receive(c.Request.Context(), b))
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json", body)
}
