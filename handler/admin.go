package handler

import (
	"couponsvc/domain"

	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"couponsvc/service"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
)

// The admin API (/api/v1/admin/*): registered only when an admin token is configured, and every
// request must carry it as a bearer token.

// adminFailurePause is how long a refused admin request waits for its 401.
const adminFailurePause = time.Second

// requireAdmin answers 401 unless the request carries the admin token. Both sides are hashed
// before the constant-time compare, so neither the token's bytes nor its length leak through
// the time taken.
func (h *Handler) requireAdmin(c *gin.Context) {
	rid := requestID(c)
	got, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(got))
	if !ok || subtle.ConstantTimeCompare(sum[:], h.adminToken[:]) != 1 {
		// Every failed attempt is logged, and answered only after a pause: guessing the token
		// costs the guesser a second per try and per connection.
		h.log.WarnContext(c.Request.Context(), "admin route refused: wrong or missing token",
			"from", c.ClientIP(), "method", c.Request.Method, "path", c.Request.URL.Path, "token_sent", ok, "request_id", rid)
		select {
		case <-time.After(adminFailurePause):
		case <-c.Request.Context().Done():
		}
		c.Header("WWW-Authenticate", `Bearer realm="couponsvc admin"`)
		writeError(c, domain.ErrUnauthorized, domain.ErrUnauthorized.Message)
		return
	}
	// Whatever this request changes is audited, in the change's transaction, under this actor.
	c.Request = c.Request.WithContext(domain.WithActor(c.Request.Context(),
		domain.Actor{Name: h.adminActor, Source: source(c), RequestID: rid}))
	c.Next()
}

// source is the client's address as Gin sees it; when that comes from a forwarding header
// (a proxy in front), the connection's own address follows, which no client can write:
// "203.0.113.7 via 10.244.0.12".
func source(c *gin.Context) string {
	client, remote := c.ClientIP(), c.RemoteIP()
	if client == remote {
		return client
	}
	return client + " via " + remote
}

// requestID is the request's id: the X-Request-ID it came with (ingress-nginx sets one; a
// client may), when it is a sane one, otherwise a new UUID. It is answered in X-Request-ID, so
// that the client can find its request in the logs and the audit trail.
func requestID(c *gin.Context) string {
	id := c.GetHeader("X-Request-ID")
	if !validRequestID(id) {
		id = uuid.Must(uuid.NewV7()).String()
	}
	c.Header("X-Request-ID", id)
	return id
}

// validRequestID accepts 1 to 128 letters, digits and "-._:" (ingress-nginx's are 32 hex
// digits): nothing that could forge a log line or bloat the audit.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:", r)) {
			return false
		}
	}
	return true
}

// CreateCouponRequest is the body of a coupon creation; code, name, discountAmount and
// totalQuantity are required.
type CreateCouponRequest struct {
	Code           string     `json:"code" example:"LUNCH-1"`
	Name           string     `json:"name" example:"Lunch drop"`
	DiscountAmount *int64     `json:"discountAmount" example:"3000"`
	TotalQuantity  *int       `json:"totalQuantity" example:"100"`
	OpensAt        *time.Time `json:"opensAt" example:"2026-11-23T04:00:00Z"`                          // default: now
	ClosesAt       *time.Time `json:"closesAt" example:"2026-11-24T04:00:00Z" extensions:"x-nullable"` // default: null, no end
	ValidDays      *int       `json:"validDays" example:"30"`                                          // default: 30
	MinOrderAmount *int64     `json:"minOrderAmount" example:"10000"`                                  // default: 0
}

// PatchCouponRequest changes a coupon; absent fields stay as they are, "closesAt": null removes
// the end of the window.
type PatchCouponRequest struct {
	Paused        *bool        `json:"paused" example:"true"`
	OpensAt       *time.Time   `json:"opensAt" example:"2026-11-23T04:00:00Z"`
	ClosesAt      optionalTime `json:"closesAt" swaggertype:"string" format:"date-time" example:"2026-11-24T04:00:00Z" extensions:"x-nullable"`
	TotalQuantity *int         `json:"totalQuantity" example:"150"`
}

// optionalTime tells an absent time (set false) from an explicit null (set, t nil).
type optionalTime struct {
	set bool
	t   *time.Time
}

func (o *optionalTime) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.t = nil
		return nil
	}
	var t time.Time
	if err := json.Unmarshal(b, &t); err != nil {
		return err
	}
	o.t = &t
	return nil
}

// CreateScheduleRequest is the body of a daily schedule; all fields but validDays (default 30)
// and minOrderAmount (default 0) are required.
type CreateScheduleRequest struct {
	CodePrefix     string `json:"codePrefix" example:"LUNCH"`
	Name           string `json:"name" example:"Lunch drop"`
	OpenTime       string `json:"openTime" example:"13:00"`
	TimeZone       string `json:"timeZone" example:"Asia/Seoul"`
	QuantityPerDay *int   `json:"quantityPerDay" example:"100"`
	DiscountAmount *int64 `json:"discountAmount" example:"3000"`
	ValidDays      *int   `json:"validDays" example:"30"`
	MinOrderAmount *int64 `json:"minOrderAmount" example:"10000"`
}

// ScheduleResponse is a daily schedule: each day's coupon is codePrefix-YYYYMMDD.
type ScheduleResponse struct {
	ID             string    `json:"id" example:"01936b2e-7c1a-7d3e-9f00-0a1b2c3d4e5f"`
	CodePrefix     string    `json:"codePrefix" example:"LUNCH"`
	Name           string    `json:"name" example:"Lunch drop"`
	OpenTime       string    `json:"openTime" example:"13:00"`
	TimeZone       string    `json:"timeZone" example:"Asia/Seoul"`
	QuantityPerDay int       `json:"quantityPerDay" example:"100"`
	DiscountAmount int64     `json:"discountAmount" example:"3000"`
	ValidDays      int       `json:"validDays" example:"30"`
	MinOrderAmount int64     `json:"minOrderAmount" example:"10000"`
	CreatedAt      time.Time `json:"createdAt" example:"2026-11-22T01:00:00Z"`
}

func scheduleResponse(s domain.Schedule) ScheduleResponse {
	return ScheduleResponse{ID: s.ID.String(), CodePrefix: s.CodePrefix, Name: s.Name, OpenTime: service.FormatOpenTime(s.OpenMinute),
		TimeZone: s.TimeZone, QuantityPerDay: s.QuantityPerDay, DiscountAmount: s.DiscountAmount, ValidDays: s.ValidDays,
		MinOrderAmount: s.MinOrderAmount, CreatedAt: s.CreatedAt.UTC()}
}

// field is a request field and whether the request lacks it.
type field struct {
	name    string
	missing bool
}

// required returns the error for the first missing field, in the order given.
func required(fields ...field) error {
	for _, f := range fields {
		if f.missing {
			return errMissing(f.name)
		}
	}
	return nil
}

// deref returns *p, or def when p is nil.
func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// createCoupon godoc
//
//	@Summary		Create a coupon
//	@Description	Creates a coupon issued from opensAt (default now) until closesAt (default: no end). Its wallet entries expire validDays (default 30) after their issue, and redeem on orders of at least minOrderAmount (default 0). Served on the admin listener (ADMIN_ADDR) when it is set, otherwise on HTTP_ADDR; never through the Ingress. The change and its audit entry (GET /api/v1/admin/audit) are committed together.
//	@Tags			admin
//	@Accept			json
//	@Produce		json
//	@Security		AdminToken
//	@Param			body	body		CreateCouponRequest	true	"the coupon"
//	@Success		201		{object}	CouponResponse
//	@Failure		400		{object}	ErrorInvalidRequest	"INVALID_REQUEST"
//	@Failure		401		{object}	ErrorUnauthorized	"UNAUTHORIZED"
//	@Failure		409		{object}	ErrorCouponExists	"COUPON_EXISTS"
//	@Failure		503		{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router			/api/v1/admin/coupons [post]
func (h *Handler) createCoupon(c *gin.Context) {
	var req CreateCouponRequest
	if err := decodeJSON(c, maxBodyBytes, &req); err != nil {
		h.writeServiceError(c, err)
		return
	}
	if err := required(field{"code", req.Code == ""}, field{"name", req.Name == ""},
		field{"discountAmount", req.DiscountAmount == nil}, field{"totalQuantity", req.TotalQuantity == nil}); err != nil {
		h.writeServiceError(c, err)
		return
	}
	cp, err := h.svc.CreateCoupon(c.Request.Context(), domain.Coupon{
		Code: req.Code, Name: req.Name, DiscountAmount: *req.DiscountAmount, TotalQuantity: *req.TotalQuantity,
		OpensAt: deref(req.OpensAt, time.Time{}), ClosesAt: req.ClosesAt,
		ValidDays: deref(req.ValidDays, service.DefaultValidDays), MinOrderAmount: deref(req.MinOrderAmount, 0),
	})
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.JSON(http.StatusCreated, couponResponse(cp))
}

// updateCoupon godoc
//
//	@Summary		Pause or resume a coupon, move its window, change its stock
//	@Description	Changes any of paused, opensAt, closesAt (null: no end) and totalQuantity. A stock change is made under the coupon's lock, between two issue batches; it can never go below what was issued. Every instance applies the change within moments. Served on the admin listener (ADMIN_ADDR) when it is set, otherwise on HTTP_ADDR; never through the Ingress. The change and its audit entry (GET /api/v1/admin/audit) are committed together.
//	@Tags			admin
//	@Accept			json
//	@Produce		json
//	@Security		AdminToken
//	@Param			code	path		string				true	"coupon code"	example(LUNCH-1)
//	@Param			body	body		PatchCouponRequest	true	"the changes"
//	@Success		200		{object}	CouponResponse
//	@Failure		400		{object}	ErrorInvalidRequest	"INVALID_REQUEST"
//	@Failure		401		{object}	ErrorUnauthorized	"UNAUTHORIZED"
//	@Failure		404		{object}	ErrorCouponNotFound	"COUPON_NOT_FOUND"
//	@Failure		409		{object}	ErrorStockBelowIssued	"STOCK_BELOW_ISSUED"
//	@Failure		503		{object}	ErrorLockTimeout	"LOCK_TIMEOUT (with Retry-After) or UNAVAILABLE"
//	@Router			/api/v1/admin/coupons/{code} [patch]
func (h *Handler) updateCoupon(c *gin.Context) {
	var req PatchCouponRequest
	if err := decodeJSON(c, maxBodyBytes, &req); err != nil {
		h.writeServiceError(c, err)
		return
	}
	if req.Paused == nil && req.OpensAt == nil && !req.ClosesAt.set && req.TotalQuantity == nil {
		h.writeServiceError(c, fmt.Errorf("%w: nothing to change: send any of paused, opensAt, closesAt, totalQuantity", domain.ErrInvalid))
		return
	}
	cp, err := h.svc.UpdateCoupon(c.Request.Context(), c.Param("code"), service.CouponPatch{
		Paused: req.Paused, OpensAt: req.OpensAt, SetClosesAt: req.ClosesAt.set, ClosesAt: req.ClosesAt.t,
		TotalQuantity: req.TotalQuantity,
	})
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.JSON(http.StatusOK, couponResponse(cp))
}

// createSchedule godoc
//
//	@Summary		Create a daily coupon schedule
//	@Description	Every day, the service creates the coupon codePrefix-YYYYMMDD (the local date of that opening), open from that day's openTime in timeZone until the next day's, with quantityPerDay coupons. Each exists at least an hour before it opens (within seconds when the schedule is created later than that), exactly once whatever the number of instances. Served on the admin listener (ADMIN_ADDR) when it is set, otherwise on HTTP_ADDR; never through the Ingress. The change and its audit entry (GET /api/v1/admin/audit) are committed together.
//	@Tags			admin
//	@Accept			json
//	@Produce		json
//	@Security		AdminToken
//	@Param			body	body		CreateScheduleRequest	true	"the schedule"
//	@Success		201		{object}	ScheduleResponse
//	@Failure		400		{object}	ErrorInvalidRequest	"INVALID_REQUEST"
//	@Failure		401		{object}	ErrorUnauthorized	"UNAUTHORIZED"
//	@Failure		409		{object}	ErrorCouponExists	"COUPON_EXISTS (a schedule with that codePrefix exists)"
//	@Failure		503		{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router			/api/v1/admin/schedules [post]
func (h *Handler) createSchedule(c *gin.Context) {
	var req CreateScheduleRequest
	if err := decodeJSON(c, maxBodyBytes, &req); err != nil {
		h.writeServiceError(c, err)
		return
	}
	if err := required(field{"codePrefix", req.CodePrefix == ""}, field{"name", req.Name == ""},
		field{"openTime", req.OpenTime == ""}, field{"timeZone", req.TimeZone == ""},
		field{"quantityPerDay", req.QuantityPerDay == nil}, field{"discountAmount", req.DiscountAmount == nil}); err != nil {
		h.writeServiceError(c, err)
		return
	}
	minute, err := service.ParseOpenTime(req.OpenTime)
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	sc, err := h.svc.CreateSchedule(c.Request.Context(), domain.Schedule{
		CodePrefix: req.CodePrefix, Name: req.Name, OpenMinute: minute, TimeZone: req.TimeZone,
		QuantityPerDay: *req.QuantityPerDay, DiscountAmount: *req.DiscountAmount,
		ValidDays: deref(req.ValidDays, service.DefaultValidDays), MinOrderAmount: deref(req.MinOrderAmount, 0),
	})
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	c.JSON(http.StatusCreated, scheduleResponse(sc))
}

// listSchedules godoc
//
//	@Summary		List the daily coupon schedules
//	@Description	Served on the admin listener (ADMIN_ADDR) when it is set, otherwise on HTTP_ADDR; never through the Ingress.
//	@Tags			admin
//	@Produce		json
//	@Security		AdminToken
//	@Success		200	{array}		ScheduleResponse
//	@Failure		401	{object}	ErrorUnauthorized	"UNAUTHORIZED"
//	@Failure		503	{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router			/api/v1/admin/schedules [get]
func (h *Handler) listSchedules(c *gin.Context) {
	scs, err := h.svc.ListSchedules(c.Request.Context())
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	out := make([]ScheduleResponse, len(scs))
	for i, s := range scs {
		out[i] = scheduleResponse(s)
	}
	c.JSON(http.StatusOK, out)
}

// AuditEntryResponse is one admin change: who (the admin credential's name, never the token),
// from where, in which request, what, and the changed row before (null for a creation) and
// after, as PostgreSQL stored it (its columns, snake_case).
type AuditEntryResponse struct {
	ID        string          `json:"id" example:"01936b2e-7c1a-7d3e-9f00-0a1b2c3d4e5f"`
	At        time.Time       `json:"at" example:"2026-11-22T01:00:00Z"`
	Actor     string          `json:"actor" example:"admin-token:1a2b3c4d"`
	Source    string          `json:"source" example:"10.244.0.1"`
	RequestID string          `json:"requestId" example:"0193a1f2-5e1d-7c3a-8b2e-4f6a7b8c9d0e"`
	Action    string          `json:"action" enums:"coupon.create,coupon.update,schedule.create" example:"coupon.update"`
	Target    string          `json:"target" example:"LUNCH-1"`
	Before    json.RawMessage `json:"before" swaggertype:"object" extensions:"x-nullable"`
	After     json.RawMessage `json:"after" swaggertype:"object"`
}

// listAudit godoc
//
//	@Summary		The admin audit trail, newest first
//	@Description	Every admin change (coupon created, coupon changed, schedule created), written in the change's own transaction: actor (the admin credential's name, "admin-token:" and the first 8 hex digits of the token's SHA-256; never the token), source address, request id (the request's X-Request-ID, or one the service made and answered in X-Request-ID), action, target, and the row before and after. A refused change leaves no entry. Served on the admin listener (ADMIN_ADDR) when it is set, otherwise on HTTP_ADDR; never through the Ingress.
//	@Tags			admin
//	@Produce		json
//	@Security		AdminToken
//	@Param			limit	query		int	false	"how many entries, 1 to 1000"	default(100)	minimum(1)	maximum(1000)
//	@Success		200		{array}		AuditEntryResponse
//	@Failure		400		{object}	ErrorInvalidRequest	"INVALID_REQUEST (limit)"
//	@Failure		401		{object}	ErrorUnauthorized	"UNAUTHORIZED"
//	@Failure		503		{object}	ErrorUnavailable	"UNAVAILABLE"
//	@Router			/api/v1/admin/audit [get]
func (h *Handler) listAudit(c *gin.Context) {
	limit := service.DefaultAuditLimit
	if v, ok := c.GetQuery("limit"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			h.writeServiceError(c, fmt.Errorf("%w: limit must be an integer between 1 and %d", domain.ErrInvalid, service.MaxAuditLimit))
			return
		}
		limit = n
	}
	es, err := h.svc.ListAudit(c.Request.Context(), limit)
	if err != nil {
		h.writeServiceError(c, err)
		return
	}
	out := make([]AuditEntryResponse, len(es))
	for i, e := range es {
		out[i] = AuditEntryResponse{ID: e.ID.String(), At: e.At.UTC(), Actor: e.Actor.Name, Source: e.Actor.Source,
			RequestID: e.Actor.RequestID, Action: e.Action, Target: e.Target, Before: e.Before, After: e.After}
		if len(out[i].Before) == 0 {
			out[i].Before = json.RawMessage("null")
		}
	}
	c.JSON(http.StatusOK, out)
}
