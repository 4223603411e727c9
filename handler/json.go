package handler

import (
	"couponsvc/domain"
	"reflect"
	"strings"

	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// maxBodyBytes is the API's limit on a request body.
const maxBodyBytes = 4 << 10

// IssueRequest is the body of an issue request. Demo mode: userId is required. Identity mode:
// it may be omitted (the user is the bearer token's), and when present it must be the token's user.
type IssueRequest struct {
	UserID string `json:"userId" example:"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"`
}

// CouponResponse is a coupon with its counts.
type CouponResponse struct {
	Code           string `json:"code" example:"A0001"`
	Name           string `json:"name" example:"Coupon A"`
	DiscountAmount int64  `json:"discountAmount" example:"10000"`
	TotalQuantity  int    `json:"totalQuantity" example:"300"`
	IssuedQuantity int    `json:"issuedQuantity" example:"12"`
	Remaining      int    `json:"remaining" example:"288"`
	// The issuing window [opensAt, closesAt); closesAt null: no end.
	OpensAt        time.Time  `json:"opensAt" example:"2026-11-22T04:00:00Z"`
	ClosesAt       *time.Time `json:"closesAt" example:"2026-11-23T04:00:00Z" extensions:"x-nullable"`
	ValidDays      int        `json:"validDays" example:"30"`         // a wallet entry expires this many days after its issue
	MinOrderAmount int64      `json:"minOrderAmount" example:"10000"` // smallest order it can be redeemed on
	Paused         bool       `json:"paused" example:"false"`
}

// WalletEntryResponse is one coupon held by a user.
type WalletEntryResponse struct {
	ID             string     `json:"id" example:"01936b2e-7c1a-7d3e-9f00-0a1b2c3d4e5f"`
	CouponCode     string     `json:"couponCode" example:"A0001"`
	UserID         string     `json:"userId" example:"3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"`
	DiscountAmount int64      `json:"discountAmount" example:"10000"`
	IssuedAt       time.Time  `json:"issuedAt" example:"2026-11-21T13:00:00.123Z"`
	ExpiresAt      time.Time  `json:"expiresAt" example:"2026-12-21T13:00:00.123Z"`
	RedeemedAt     *time.Time `json:"redeemedAt" example:"2026-11-22T13:05:00.123Z" extensions:"x-nullable"` // null until redeemed
	OrderID        *string    `json:"orderId" example:"ORD-20261122-0001" extensions:"x-nullable"`           // the order it was redeemed on
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody says what went wrong: a stable code for programs, a message for people. It carries
// no example: the OpenAPI document shows each code through its own type (openapi.go).
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// StatusResponse is the body of the health endpoints.
type StatusResponse struct {
	Status string `json:"status" example:"ok"`
}

func couponResponse(c domain.Coupon) CouponResponse {
	var closes *time.Time
	if c.ClosesAt != nil {
		t := c.ClosesAt.UTC()
		closes = &t
	}
	return CouponResponse{Code: c.Code, Name: c.Name, DiscountAmount: c.DiscountAmount,
		TotalQuantity: c.TotalQuantity, IssuedQuantity: c.IssuedQuantity, Remaining: c.TotalQuantity - c.IssuedQuantity,
		OpensAt: c.OpensAt.UTC(), ClosesAt: closes, ValidDays: c.ValidDays, MinOrderAmount: c.MinOrderAmount, Paused: c.Paused}
}

func walletEntryResponse(e domain.WalletEntry) WalletEntryResponse {
	var redeemed *time.Time
	if e.RedeemedAt != nil {
		t := e.RedeemedAt.UTC()
		redeemed = &t
	}
	return WalletEntryResponse{ID: e.ID.String(), CouponCode: e.CouponCode, UserID: e.UserID.String(),
		DiscountAmount: e.DiscountAmount, IssuedAt: e.IssuedAt.UTC(), ExpiresAt: e.ExpiresAt.UTC(),
		RedeemedAt: redeemed, OrderID: e.OrderID}
}

func errMissing(field string) error {
	return fmt.Errorf("%w: %s is required", domain.ErrInvalid, field)
}

// decodeJSON reads at most limit bytes of body into v: one JSON object, no unknown fields, no
// trailing data. Every failure is a domain.ErrInvalid that says what was wrong.
func decodeJSON(c *gin.Context, limit int64, v any) error { return decodeJSONBody(c, limit, v, false) }

// decodeBody decodes the body of a user route into v: in identity mode the body may be empty
// (the user is the token's), in demo mode it is required.
func (h *Handler) decodeBody(c *gin.Context, v any) error {
	return decodeJSONBody(c, maxBodyBytes, v, h.verifier != nil)
}

func decodeJSONBody(c *gin.Context, limit int64, v any, optional bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fmt.Errorf("%w: body over %d bytes", domain.ErrInvalid, limit)
	case err != nil:
		return fmt.Errorf("%w: reading body: %v", domain.ErrInvalid, err)
	case len(bytes.TrimSpace(body)) == 0 && optional:
		return nil
	case len(bytes.TrimSpace(body)) == 0:
		return fmt.Errorf("%w: body is empty; send a JSON object", domain.ErrInvalid)
	case bytes.TrimSpace(body)[0] != '{':
		return fmt.Errorf("%w: body must be a JSON object", domain.ErrInvalid)
	}
	if ct := c.ContentType(); ct != "application/json" {
		return fmt.Errorf("%w: Content-Type %q: send application/json", domain.ErrInvalid, ct)
	}
	if r, ok := v.(*IssueRequest); ok && decodeIssueFast(body, r) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: malformed JSON: %v", domain.ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: malformed JSON: data after the object", domain.ErrInvalid)
	}
	// encoding/json matches keys case-insensitively and keeps the last of duplicated keys;
	// another parser on the way (a proxy, a WAF) may match exactly or keep the first. An
	// ambiguous request is refused, not guessed at.
	return checkKeys(body, v)
}

// checkKeys refuses a top-level key of body (known to be valid JSON) that is not exactly one of
// v's JSON field names ("USERID" is not "userId"), or that appears twice.
func checkKeys(body []byte, v any) error {
	names := map[string]bool{}
	if t := reflect.TypeOf(v); t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		for f := range t.Elem().Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			names[name] = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the opening brace
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := t.(string)
		switch {
		case !names[key]:
			return fmt.Errorf("%w: malformed JSON: unknown field %q", domain.ErrInvalid, key)
		case seen[key]:
			return fmt.Errorf("%w: malformed JSON: key %q appears twice", domain.ErrInvalid, key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// decodeIssueFast decodes the one body shape nearly every issue request has,
// {"userId":"<36 characters>"}, without encoding/json. Any other shape, or a value that would
// need unescaping, falls back to the full decoder, so the result is the same either way.
func decodeIssueFast(body []byte, r *IssueRequest) bool {
	const prefix, suffix = `{"userId":"`, `"}`
	body = bytes.TrimSpace(body)
	if len(body) != len(prefix)+36+len(suffix) || !bytes.HasPrefix(body, []byte(prefix)) || !bytes.HasSuffix(body, []byte(suffix)) {
		return false
	}
	id := body[len(prefix) : len(prefix)+36]
	for _, ch := range id {
		if !(ch == '-' || '0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f' || 'A' <= ch && ch <= 'F') {
			return false
		}
	}
	r.UserID = string(id)
	return true
}
