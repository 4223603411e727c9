package handler

import (
	"couponsvc/domain"

	"net/http"

	"couponsvc/internal/peer"

	"github.com/gin-gonic/gin"
	swaggerFiles "github.com/swaggo/files"
	ginSwagger "github.com/swaggo/gin-swagger"
)

// routes lists the whole HTTP surface of the service; the admin routes are among them when
// withAdmin, or on a listener of their own (adminRoutes).
func (h *Handler) routes(r *gin.Engine, withAdmin bool) {
	r.GET("/healthz", h.healthz)
	r.GET("/readyz", h.readyz)
	r.GET("/metrics", h.prometheus)

	api := r.Group("/api/v1")
	// The user routes: in identity mode identify answers 401 unless a valid bearer token names
	// the caller (identity.go), except the issue route's answers that do not depend on
	// who asks (identifyIssuer); the coupon reads are public.
	api.POST("/coupons/:code/issue", h.identifyIssuer, h.limitInFlight, h.issueCoupon)
	api.GET("/coupons", h.listCoupons)
	api.GET("/coupons/:code", h.getCoupon)
	api.GET("/users/me/coupons", h.identify, h.limitReads, h.myWallet)
	api.GET("/users/:userId/coupons", h.identify, h.limitReads, h.userWallet)
	api.POST("/wallet/:walletId/redeem", h.identify, h.redeem)

	if withAdmin { // no token configured: the admin routes do not exist
		h.adminAPI(api)
	}

	// Between instances only (see package peer); the Ingress does not route it.
	r.POST(peer.Route, h.peerBatch)

	h.swaggerAndFallbacks(r)
}

// adminRoutes is the surface of the admin listener (ADMIN_ADDR): the admin routes, and the
// Swagger UI, so that its "Try it out" reaches them.
func (h *Handler) adminRoutes(r *gin.Engine) {
	h.adminAPI(r.Group("/api/v1"))
	h.swaggerAndFallbacks(r)
}

// adminAPI registers the admin routes under api: each needs the admin token, and runs with its
// actor (for the audit trail) in its context.
func (h *Handler) adminAPI(api *gin.RouterGroup) {
	admin := api.Group("/admin", h.requireAdmin)
	admin.POST("/coupons", h.createCoupon)
	admin.PATCH("/coupons/:code", h.updateCoupon)
	admin.POST("/schedules", h.createSchedule)
	admin.GET("/schedules", h.listSchedules)
	admin.GET("/audit", h.listAudit)
}

func (h *Handler) swaggerAndFallbacks(r *gin.Engine) {
	r.GET("/swagger", func(c *gin.Context) { c.Redirect(http.StatusMovedPermanently, "/swagger/index.html") })
	r.GET("/swagger/*any", ginSwagger.WrapHandler(swaggerFiles.Handler))

	r.NoRoute(func(c *gin.Context) { writeError(c, domain.ErrNoRoute, domain.ErrNoRoute.Message) })
	r.NoMethod(func(c *gin.Context) {
		writeError(c, domain.ErrMethodNotAllowed, domain.ErrMethodNotAllowed.Message)
	})
}
