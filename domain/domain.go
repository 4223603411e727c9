// Package domain is couponsvc's vocabulary: the records every layer passes around (a coupon,
// a wallet entry, a daily schedule) and the errors every layer returns. The repository returns
// these errors, the service returns them, and the HTTP layer answers each with the status and
// contract code of its row in the table below; the metrics count it under its label.
//
// Adding an error is one line in that table.
package domain

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Error is a failure a client is told about.
type Error struct {
	Status     int    // HTTP status
	Code       string // the API's error code
	Label      string // the result label in the metrics
	Message    string // for the client; %q stands for the path parameter Param, when set
	Param      string // the path parameter the message names, or ""
	RetryAfter string // Retry-After header (seconds), or ""
	Detailed   bool   // the client is told the whole error chain (what was wrong with its input)
}

// Error reads the code as words ("SOLD_OUT": "sold out"), for logs and wrapped errors.
func (e *Error) Error() string { return strings.ReplaceAll(strings.ToLower(e.Code), "_", " ") }

// The errors, one per row: status, code, metric label, message for the client.
var (
	ErrInvalid           = &Error{Status: 400, Code: "INVALID_REQUEST", Label: "invalid", Message: "invalid request", Detailed: true}
	ErrCouponNotFound    = &Error{Status: 404, Code: "COUPON_NOT_FOUND", Label: "not_found", Message: "no coupon with code %q", Param: "code"}
	ErrAlreadyIssued     = &Error{Status: 409, Code: "ALREADY_ISSUED", Label: "already_issued", Message: "this user already holds this coupon"}
	ErrSoldOut           = &Error{Status: 410, Code: "SOLD_OUT", Label: "sold_out", Message: "no coupons left"}
	ErrEventNotOpen      = &Error{Status: 403, Code: "EVENT_NOT_OPEN", Label: "event_not_open", Message: "the coupon's issuing window has not opened yet"}
	ErrEventClosed       = &Error{Status: 403, Code: "EVENT_CLOSED", Label: "event_closed", Message: "the coupon's issuing window has closed or the coupon is paused"}
	ErrCouponExists      = &Error{Status: 409, Code: "COUPON_EXISTS", Label: "exists", Message: "a coupon (or schedule prefix) with this code exists"}
	ErrStockBelowIssued  = &Error{Status: 409, Code: "STOCK_BELOW_ISSUED", Label: "stock_below_issued", Message: "totalQuantity would be below what was already issued"}
	ErrWalletNotFound    = &Error{Status: 404, Code: "WALLET_NOT_FOUND", Label: "not_found", Message: "no wallet entry with id %q", Param: "walletId"}
	ErrForbidden         = &Error{Status: 403, Code: "FORBIDDEN", Label: "forbidden", Message: "forbidden", Detailed: true}
	ErrNotOwner          = &Error{Status: 403, Code: "NOT_OWNER", Label: "not_owner", Message: "this wallet entry belongs to another user"}
	ErrExpired           = &Error{Status: 410, Code: "EXPIRED", Label: "expired", Message: "this wallet entry has expired"}
	ErrOrderBelowMinimum = &Error{Status: 422, Code: "ORDER_BELOW_MINIMUM", Label: "below_minimum", Message: "the order is below the coupon's minimum order amount"}
	ErrAlreadyRedeemed   = &Error{Status: 409, Code: "ALREADY_REDEEMED", Label: "already_redeemed", Message: "this wallet entry was redeemed for another order"}
	ErrLockTimeout       = &Error{Status: 503, Code: "LOCK_TIMEOUT", Label: "lock_timeout", Message: "the coupon is busy; nothing was issued, retry shortly", RetryAfter: "1"}
	ErrUnavailable       = &Error{Status: 503, Code: "UNAVAILABLE", Label: "unavailable", Message: "a backing store is unreachable; nothing was issued, retry shortly", RetryAfter: "2"}
	ErrOutcomeUnknown    = &Error{Status: 503, Code: "OUTCOME_UNKNOWN", Label: "outcome_unknown", Message: "PostgreSQL went away before saying whether the coupon was stored; check your wallet before retrying", RetryAfter: "2"}
	ErrTooManyRequests   = &Error{Status: 429, Code: "TOO_MANY_REQUESTS", Label: "too_many_requests", Message: "this instance is at its in-flight limit; retry shortly", RetryAfter: "1"}
	ErrUnauthorized      = &Error{Status: 401, Code: "UNAUTHORIZED", Label: "unauthorized", Message: "admin routes need Authorization: Bearer <ADMIN_TOKEN>"}
	ErrNoRoute           = &Error{Status: 404, Code: "NOT_FOUND", Label: "no_route", Message: "no such route"}
	ErrMethodNotAllowed  = &Error{Status: 405, Code: "METHOD_NOT_ALLOWED", Label: "method_not_allowed", Message: "method not allowed on this route"}
)

// Internal is what a client is told of any other error: a bug, logged where it happens.
var Internal = &Error{Status: 500, Code: "INTERNAL", Label: "error", Message: "internal error"}

// Canceled is what a client that went away is told (nobody reads it): 499, as nginx logs it.
var Canceled = &Error{Status: 499, Code: "CANCELED", Label: "canceled", Message: "request canceled by the client"}

// Errors lists the table, for the documentation and its tests.
var Errors = []*Error{ErrInvalid, ErrCouponNotFound, ErrAlreadyIssued, ErrSoldOut, ErrEventNotOpen, ErrEventClosed,
	ErrCouponExists, ErrStockBelowIssued, ErrWalletNotFound, ErrForbidden, ErrNotOwner, ErrExpired, ErrOrderBelowMinimum,
	ErrAlreadyRedeemed, ErrLockTimeout, ErrUnavailable, ErrOutcomeUnknown, ErrTooManyRequests, ErrUnauthorized, ErrNoRoute,
	ErrMethodNotAllowed, Internal, Canceled}

// ErrorOf returns the table's row for err: nil for nil, Canceled for a client that went away,
// Internal for an error not in the table.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.Canceled) {
		return Canceled
	}
	return Internal
}

// ByCode returns the table's row with that code, or nil.
func ByCode(code string) *Error {
	for _, e := range Errors {
		if e.Code == code {
			return e
		}
	}
	return nil
}

// Coupon is a coupon: what it gives, how many, and when it can be issued.
type Coupon struct {
	ID             uuid.UUID
	Code           string
	Name           string
	DiscountAmount int64
	TotalQuantity  int
	IssuedQuantity int
	FenceToken     int64

	OpensAt        time.Time  // issuing starts
	ClosesAt       *time.Time // issuing ends; nil: never
	ValidDays      int        // a wallet entry expires this many days (of 24 h) after its issue
	MinOrderAmount int64      // smallest order the coupon can be redeemed on
	Paused         bool       // issuing is suspended
}

var codePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidCode reports whether code can name a coupon (the schema's CHECK); anything else cannot
// exist and is answered as not found without a query.
func ValidCode(code string) bool { return codePattern.MatchString(code) }

// WalletEntry is a coupon issued to a user (a coupon_wallet row), with the coupon facts a
// client needs.
type WalletEntry struct {
	ID             uuid.UUID
	CouponID       uuid.UUID
	CouponCode     string
	UserID         uuid.UUID
	DiscountAmount int64
	IssuedAt       time.Time
	ExpiresAt      time.Time
	RedeemedAt     *time.Time // nil until redeemed
	OrderID        *string    // the order it was redeemed on
}

// Schedule is a daily coupon: each local day's coupon PREFIX-YYYYMMDD opens OpenMinute minutes
// past local midnight in TimeZone and closes when the next day's opens.
type Schedule struct {
	ID             uuid.UUID
	CodePrefix     string
	Name           string
	OpenMinute     int    // minutes past local midnight, 0..1439
	TimeZone       string // IANA name
	QuantityPerDay int
	DiscountAmount int64
	ValidDays      int
	MinOrderAmount int64
	CreatedAt      time.Time
}

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
