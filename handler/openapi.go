package handler

// Types for the OpenAPI document only (docs/, served by Swagger UI): nothing sends them.
//
// Swagger 2.0 takes a response's example from its schema, one example per schema. So that
// Swagger UI shows under each status the code the service answers there, every error code has
// a type of its own, with exactly the shape of ErrorResponse and that code's example; each
// @Failure names the type of the code in its description (the first one, where a status has
// two). handler/openapi_test.go checks the generated document keeps to this.

// Error bodies, one per contract code, by status.
type (
	ErrorInvalidRequest struct {
		Error struct {
			Code    string `json:"code" example:"INVALID_REQUEST"`
			Message string `json:"message" example:"invalid request: userId must be a UUID like 3f2b8c1e-5d6a-4c7b-9e0f-1a2b3c4d5e6f"`
		} `json:"error"`
	}
	ErrorUnauthorized struct {
		Error struct {
			Code    string `json:"code" example:"UNAUTHORIZED"`
			Message string `json:"message" example:"admin routes need Authorization: Bearer <ADMIN_TOKEN>"`
		} `json:"error"`
	}
	ErrorEventNotOpen struct {
		Error struct {
			Code    string `json:"code" example:"EVENT_NOT_OPEN"`
			Message string `json:"message" example:"the coupon's issuing window has not opened yet"`
		} `json:"error"`
	}
	ErrorForbidden struct {
		Error struct {
			Code    string `json:"code" example:"FORBIDDEN"`
			Message string `json:"message" example:"forbidden: this is another user's wallet"`
		} `json:"error"`
	}
	ErrorNotOwner struct {
		Error struct {
			Code    string `json:"code" example:"NOT_OWNER"`
			Message string `json:"message" example:"this wallet entry belongs to another user"`
		} `json:"error"`
	}
	ErrorCouponNotFound struct {
		Error struct {
			Code    string `json:"code" example:"COUPON_NOT_FOUND"`
			Message string `json:"message" example:"no coupon with code \"A0001\""`
		} `json:"error"`
	}
	ErrorWalletNotFound struct {
		Error struct {
			Code    string `json:"code" example:"WALLET_NOT_FOUND"`
			Message string `json:"message" example:"no wallet entry with id \"01936b2e-7c1a-7d3e-9f00-0a1b2c3d4e5f\""`
		} `json:"error"`
	}
	ErrorAlreadyIssued struct {
		Error struct {
			Code    string `json:"code" example:"ALREADY_ISSUED"`
			Message string `json:"message" example:"this user already holds this coupon"`
		} `json:"error"`
	}
	ErrorCouponExists struct {
		Error struct {
			Code    string `json:"code" example:"COUPON_EXISTS"`
			Message string `json:"message" example:"a coupon (or schedule prefix) with this code exists"`
		} `json:"error"`
	}
	ErrorStockBelowIssued struct {
		Error struct {
			Code    string `json:"code" example:"STOCK_BELOW_ISSUED"`
			Message string `json:"message" example:"totalQuantity would be below what was already issued"`
		} `json:"error"`
	}
	ErrorAlreadyRedeemed struct {
		Error struct {
			Code    string `json:"code" example:"ALREADY_REDEEMED"`
			Message string `json:"message" example:"this wallet entry was redeemed for another order"`
		} `json:"error"`
	}
	ErrorSoldOut struct {
		Error struct {
			Code    string `json:"code" example:"SOLD_OUT"`
			Message string `json:"message" example:"no coupons left"`
		} `json:"error"`
	}
	ErrorExpired struct {
		Error struct {
			Code    string `json:"code" example:"EXPIRED"`
			Message string `json:"message" example:"this wallet entry has expired"`
		} `json:"error"`
	}
	ErrorOrderBelowMinimum struct {
		Error struct {
			Code    string `json:"code" example:"ORDER_BELOW_MINIMUM"`
			Message string `json:"message" example:"the order is below the coupon's minimum order amount"`
		} `json:"error"`
	}
	ErrorTooManyRequests struct {
		Error struct {
			Code    string `json:"code" example:"TOO_MANY_REQUESTS"`
			Message string `json:"message" example:"this instance is at its in-flight limit; retry shortly"`
		} `json:"error"`
	}
	ErrorLockTimeout struct {
		Error struct {
			Code    string `json:"code" example:"LOCK_TIMEOUT"`
			Message string `json:"message" example:"the coupon is busy; nothing was issued, retry shortly"`
		} `json:"error"`
	}
	ErrorUnavailable struct {
		Error struct {
			Code    string `json:"code" example:"UNAVAILABLE"`
			Message string `json:"message" example:"a backing store is unreachable; nothing was issued, retry shortly"`
		} `json:"error"`
	}
)

// NewWalletEntryResponse is the 201 of an issue: a WalletEntryResponse just issued, so neither
// redeemed nor on an order. Its example shows redeemedAt and orderId as the null they are.
//
// swag cannot write a null example: it converts an example tag to the field's type, and a
// string "null" stays a string in Swagger UI. These two fields are therefore untyped (any) with
// ",string", which makes swag keep the tag's text as is; Swagger UI parses the example of an
// untyped property as JSON, so it shows null. The ",string" is inert: this type is never
// marshalled.
type NewWalletEntryResponse struct {
	WalletEntryResponse
	RedeemedAt any `json:"redeemedAt,string" format:"date-time" example:"null" extensions:"x-nullable"` // null until redeemed (RFC 3339 then)
	OrderID    any `json:"orderId,string" example:"null" extensions:"x-nullable"`                       // null until redeemed (the order's id then)
}
