package handler

import (
	"couponsvc/domain"
	"errors"

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
	b, mac, err := peer.ReadBatch(c.Request, h.clusterKey)
	if errors.Is(err, peer.ErrUnauthenticated) {
		h.log.WarnContext(c.Request.Context(), "peer batch refused: not authenticated by CLUSTER_KEY", "from", c.ClientIP())
		writeError(c, domain.ErrUnauthorized, "peer batches need the instances' MAC")
		return
	}
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	body, err := peer.EncodeResults(h.svc.Receive(c.Request.Context(), b))
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.Header(peer.MACHeader, peer.ReplyMAC(h.clusterKey, mac, body))
	c.Data(http.StatusOK, "application/json", body)
}
