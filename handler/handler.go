// Package handler is couponsvc's HTTP layer: routes, request decoding and validation, the
// mapping of service errors to the API's status codes and error bodies, and the swag
// annotations the OpenAPI document in docs/ is generated from.
package handler

import (
	"couponsvc/domain"
	"fmt"

	"context"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"couponsvc/internal/arrival"
	"couponsvc/internal/auth"
	"couponsvc/internal/metrics"
	"couponsvc/internal/seal"
	"couponsvc/service"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

// Handler serves the HTTP API (docs/API.md).
type Handler struct {
	svc      *service.Service
	metrics  *metrics.Metrics
	log      *slog.Logger
	inflight chan struct{} // a slot per issue request in progress (MAX_INFLIGHT)
	reading  chan struct{} // a slot per wallet read in progress (MAX_INFLIGHT too)
	observed sync.Map      // observedKey -> observedSeries
	engine   *gin.Engine
	// adminToken is the SHA-256 of ADMIN_TOKEN; the admin routes exist only when it is set.
	adminToken *[sha256.Size]byte
	// adminActor names the admin credential in the audit trail without revealing it.
	adminActor string
	// admin serves the admin routes on a listener of their own (ADMIN_ADDR); nil: they are
	// routes of engine.
	admin      *gin.Engine
	clusterKey seal.Key
	// verifier checks bearer tokens in identity mode; nil: demo mode.
	verifier *auth.Verifier
	// tracer starts a span per request (trace.go); nil: traces are off.
	tracer trace.Tracer
}

// Config tunes the HTTP layer.
type Config struct {
	MaxInFlight int      // issue requests in progress at once, and wallet reads; beyond it 429
	AdminToken  string   // bearer token of the admin routes; empty: no admin routes
	ClusterKey  seal.Key // authenticates the batches other instances forward (nil: none)
	// Identity verifies the bearer tokens of the user routes (identity mode); nil: demo mode,
	// where the user is whoever the request says.
	Identity *auth.Verifier
	// Tracer starts a server span per request; nil: traces are off, and no middleware is
	// installed for them.
	Tracer trace.Tracer
	// SeparateAdmin serves the admin routes only from Admin() (a listener of their own,
	// ADMIN_ADDR), not from the handler itself.
	SeparateAdmin bool
}

// New returns the HTTP handler with every route registered.
func New(svc *service.Service, m *metrics.Metrics, log *slog.Logger, cfg Config) *Handler {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4096
	}
	h := &Handler{svc: svc, metrics: m, log: log, inflight: make(chan struct{}, cfg.MaxInFlight),
		reading: make(chan struct{}, cfg.MaxInFlight), verifier: cfg.Identity,
		clusterKey: cfg.ClusterKey, tracer: cfg.Tracer}
	if h.verifier != nil {
		for _, r := range auth.Reasons { // every reason shows, at 0, from the start
			m.AuthFailures.WithLabelValues(r)
		}
	}
	if cfg.AdminToken != "" {
		sum := sha256.Sum256([]byte(cfg.AdminToken))
		h.adminToken = &sum
		h.adminActor = AdminActor(cfg.AdminToken)
	}
	h.engine = h.newEngine()
	h.routes(h.engine, h.adminToken != nil && !cfg.SeparateAdmin)
	if h.adminToken != nil && cfg.SeparateAdmin {
		h.admin = h.newEngine()
		// Nothing stands between a client and the admin listener (the Ingress never routes to
		// it): the source the audit records is the connection's, never a header the client
		// could write.
		if err := h.admin.SetTrustedProxies(nil); err != nil {
			panic(err) // nil is always accepted
		}
		h.adminRoutes(h.admin)
	}
	return h
}

func (h *Handler) newEngine() *gin.Engine {
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.UseRawPath = true // an escaped slash stays inside its path segment: "..%2FA0001" is an (unknown) code
	if h.tracer != nil {
		r.Use(h.traceRequest)
	}
	r.Use(h.observe, h.recoverPanic)
	return r
}

// AdminActor is how the audit trail names the admin token: "admin-token:" and the first 8 hex
// digits of its SHA-256, stable for one token, different for the next, and no help in guessing
// it (the token has at least 32 characters).
func AdminActor(token string) string {
	sum := sha256.Sum256([]byte(token))
	return fmt.Sprintf("admin-token:%x", sum[:4])
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.engine.ServeHTTP(w, r) }

// Admin is the handler of the admin listener (Config.SeparateAdmin), nil when the admin routes
// have none.
func (h *Handler) Admin() http.Handler {
	if h.admin == nil {
		return nil
	}
	return h.admin
}

// observe records every answer in the HTTP metrics, by route template (never the raw path,
// whose values are unbounded).
func (h *Handler) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	key := observedKey{route: c.FullPath(), method: c.Request.Method, status: c.Writer.Status()}
	if key.route == "" {
		key.route = "unmatched"
	}
	if !knownMethods[key.method] {
		key.method = "OTHER" // a client's made-up method must not grow the label set
	}
	o, ok := h.observed.Load(key)
	if !ok {
		o, _ = h.observed.LoadOrStore(key, observedSeries{
			requests: h.metrics.HTTPRequests.WithLabelValues(key.route, key.method, strconv.Itoa(key.status)),
			duration: h.metrics.HTTPDuration.WithLabelValues(key.route),
		})
	}
	series := o.(observedSeries)
	series.requests.Inc()
	series.duration.Observe(time.Since(start).Seconds())
}

// observedKey and observedSeries cache the metric series of each route, method and status, so
// that a request does not hash its labels on every answer.
type observedKey struct {
	route, method string
	status        int
}

type observedSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

func (h *Handler) recoverPanic(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.log.ErrorContext(c.Request.Context(), "panic", "path", c.Request.URL.Path, "panic", v)
			writeError(c, domain.Internal, domain.Internal.Message)
		}
	}()
	c.Next()
}

// limitInFlight bounds the issue requests in progress: beyond the limit the answer is 429 at
// once, so a crowd cannot queue without bound inside one instance.
func (h *Handler) limitInFlight(c *gin.Context) {
	if !take(c, h.inflight) {
		return
	}
	h.metrics.InFlight.Inc()
	defer func() {
		<-h.inflight
		h.metrics.InFlight.Dec()
	}()
	c.Next()
}

// take takes one of slots, or answers 429 at once when none is free.
func take(c *gin.Context, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
		writeError(c, domain.ErrTooManyRequests, domain.ErrTooManyRequests.Message)
		return false
	}
}

// limitReads bounds the wallet reads in progress as limitInFlight bounds the issues, with slots
// of their own: a flood of reads is answered 429 rather than queued, and cannot take the issue
// requests' slots (nor, below, more than their share of PostgreSQL: service.Config.ReadConns).
func (h *Handler) limitReads(c *gin.Context) {
	if !take(c, h.reading) {
		return
	}
	defer func() { <-h.reading }()
	c.Next()
}

// healthz godoc
//
//	@Summary	Liveness: the process is up
//	@Tags		ops
//	@Produce	json
//	@Success	200	{object}	StatusResponse
//	@Router		/healthz [get]
func (h *Handler) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, StatusResponse{Status: "ok"})
}

// readyz godoc
//
//	@Summary	Readiness: PostgreSQL and a quorum of the Redis nodes are reachable
//	@Tags		ops
//	@Produce	json
//	@Success	200	{object}	StatusResponse
//	@Failure	503	{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router		/readyz [get]
func (h *Handler) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := h.svc.Ready(ctx); err != nil {
		writeError(c, domain.ErrUnavailable, err.Error()) // which store, for the operator
		return
	}
	c.JSON(http.StatusOK, StatusResponse{Status: "ready"})
}

// prometheus godoc
//
//	@Summary	Prometheus metrics in the text exposition format
//	@Tags		ops
//	@Produce	plain
//	@Success	200	{string}	string
//	@Router		/metrics [get]
func (h *Handler) prometheus(c *gin.Context) {
	promhttp.HandlerFor(h.metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP(c.Writer, c.Request)
}

// issueCoupon godoc
//
//	@Summary		Issue a coupon to a user, first come first served
//	@Description	Issues one coupon of the given code to the user. A 201 is sent only after the wallet row is committed; any other answer left nothing behind. Retries by the same user always get 409. Demo mode: the user is the body's userId. Identity mode: the user is the bearer token's; the body (or its userId) may be omitted, and a userId must be the token's user (403 FORBIDDEN).
//	@Tags			coupons
//	@Accept			json
//	@Produce		json
//	@Security		BearerAuth
//	@Param			code	path		string			true	"coupon code"	example(A0001)
//	@Param			body	body		IssueRequest	false	"who asks (required in demo mode)"
//	@Success		201		{object}	NewWalletEntryResponse
//	@Failure		400		{object}	ErrorInvalidRequest	"INVALID_REQUEST"
//	@Failure		401		{object}	ErrorUnauthorized	"UNAUTHORIZED (identity mode: no valid bearer token; with WWW-Authenticate)"
//	@Failure		403		{object}	ErrorEventNotOpen	"EVENT_NOT_OPEN (before opensAt), EVENT_CLOSED (after closesAt, or paused) or FORBIDDEN (identity mode: userId is not the token's user)"
//	@Failure		404		{object}	ErrorCouponNotFound	"COUPON_NOT_FOUND"
//	@Failure		409		{object}	ErrorAlreadyIssued	"ALREADY_ISSUED"
//	@Failure		410		{object}	ErrorSoldOut	"SOLD_OUT"
//	@Failure		429		{object}	ErrorTooManyRequests	"TOO_MANY_REQUESTS (with Retry-After)"
//	@Failure		503		{object}	ErrorLockTimeout	"LOCK_TIMEOUT (with Retry-After), UNAVAILABLE (nothing was issued) or OUTCOME_UNKNOWN (PostgreSQL went away before saying: check the wallet before retrying)"
//	@Router			/api/v1/coupons/{code}/issue [post]
func (h *Handler) issueCoupon(c *gin.Context) {
	var req IssueRequest
	if err := h.decodeBody(c, &req); err != nil {
		h.writeServiceError(c, err)
		return
	}
	userID, err := userFor(c, req.UserID)
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	// The request's context (cancelled when its client goes away) carries when it reached the
	// host: its place in the queue.
	ctx := c.Request.Context()
	e, err := h.svc.Issue(service.WithArrival(ctx, arrival.Of(ctx)), c.Param("code"), userID)
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.JSON(http.StatusCreated, walletEntryResponse(e))
}

// listCoupons godoc
//
//	@Summary	List coupons with their issued and remaining quantities
//	@Tags		coupons
//	@Produce	json
//	@Success	200	{array}		CouponResponse
//	@Failure	503	{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router		/api/v1/coupons [get]
func (h *Handler) listCoupons(c *gin.Context) {
	cs, err := h.svc.ListCoupons(c.Request.Context())
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	out := make([]CouponResponse, len(cs))
	for i, cp := range cs {
		out[i] = couponResponse(cp)
	}
	c.JSON(http.StatusOK, out)
}

// getCoupon godoc
//
//	@Summary	One coupon with its issued and remaining quantities
//	@Tags		coupons
//	@Produce	json
//	@Param		code	path		string	true	"coupon code"	example(A0001)
//	@Success	200		{object}	CouponResponse
//	@Failure	404		{object}	ErrorCouponNotFound	"COUPON_NOT_FOUND"
//	@Failure	503		{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router		/api/v1/coupons/{code} [get]
func (h *Handler) getCoupon(c *gin.Context) {
	cp, err := h.svc.GetCoupon(c.Request.Context(), c.Param("code"))
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.JSON(http.StatusOK, couponResponse(cp))
}

// userWallet godoc
//
//	@Summary		The coupons a user holds
//	@Description	Identity mode: only the bearer token's user may read this wallet (403 FORBIDDEN for another user's); see also /api/v1/users/me/coupons.
//	@Tags			wallet
//	@Produce		json
//	@Security		BearerAuth
//	@Param			userId	path		string	true	"user id (UUID)"	example(3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f)
//	@Param			status	query		string	false	"only entries in this status (usable = neither redeemed nor expired)"	Enums(usable, redeemed, expired)
//	@Success		200		{array}		WalletEntryResponse
//	@Failure		400		{object}	ErrorInvalidRequest	"INVALID_REQUEST"
//	@Failure		401		{object}	ErrorUnauthorized	"UNAUTHORIZED (identity mode; with WWW-Authenticate)"
//	@Failure		403		{object}	ErrorForbidden	"FORBIDDEN (identity mode: another user's wallet)"
//	@Failure		429		{object}	ErrorTooManyRequests	"TOO_MANY_REQUESTS (with Retry-After)"
//	@Failure		503		{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router			/api/v1/users/{userId}/coupons [get]
func (h *Handler) userWallet(c *gin.Context) {
	userID, err := service.ParseUserID(c.Param("userId"))
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	if caller, ok := callerOf(c); ok && caller.User != userID {
		h.writeServiceError(c, errForbidden("this is another user's wallet"))
		return
	}
	h.wallet(c, userID)
}

// wallet answers the user's wallet entries, filtered by ?status=.
func (h *Handler) wallet(c *gin.Context, userID uuid.UUID) {
	status, err := service.ParseWalletStatus(c.Query("status"))
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	w, err := h.svc.UserWallet(c.Request.Context(), userID, status)
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	out := make([]WalletEntryResponse, len(w))
	for i, e := range w {
		out[i] = walletEntryResponse(e)
	}
	c.JSON(http.StatusOK, out)
}

// writeServiceError answers err with its row of the domain's error table (package domain):
// status, code, message and Retry-After. An error not in the table is a bug: logged, 500.
func (h *Handler) writeServiceError(c *gin.Context, err error) {
	e := domain.ErrorOf(err)
	msg := e.Message
	switch {
	case e.Detailed:
		msg = err.Error()
	case e.Param != "":
		msg = fmt.Sprintf(msg, c.Param(e.Param))
	case e == domain.Internal:
		h.log.ErrorContext(c.Request.Context(), "internal error", "method", c.Request.Method, "route", c.FullPath(), "err", err)
	}
	writeError(c, e, msg)
}

// writeError answers the API's error body for e, with msg as its message. It is written
// without reflection: a sold-out crowd is mostly error answers.
func writeError(c *gin.Context, e *domain.Error, msg string) {
	if e.RetryAfter != "" {
		c.Header("Retry-After", e.RetryAfter)
	}
	b := make([]byte, 0, 40+len(e.Code)+len(msg))
	b = append(b, `{"error":{"code":`...)
	b = appendJSONString(b, e.Code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, "}}"...)
	c.Data(e.Status, "application/json; charset=utf-8", b)
	c.Abort()
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals; invalid UTF-8 becomes U+FFFD
	return append(b, q...)
}
