package service

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Refusal answers, from the engine's cache alone (engine.Engine.Refusal: no I/O), an issue
// request whose answer does not depend on who asks (sold out, closed, not open). claimed is the
// user the request claims to be, not yet verified.
//
// Identity mode asks it before verifying the request's token, so that the crowd of a sold-out or
// closed coupon costs no signature check: those answers are public (GET /api/v1/coupons/{code}
// says as much to anyone). A refusal with verify true is the sold-out answer to a claimed user
// who holds the coupon: only a verified request may learn that (409 ALREADY_ISSUED, the same on
// every retry), so the token is verified first, and a request whose token fails gets this
// refusal, not 401, so that an unverified request's answer never depends on whether the claimed
// user holds the coupon. nil: only the full path (Issue) can answer.
//
// A refusal without verify is counted and logged like Issue's answers; one with verify that is
// given is passed to Answered.
func (s *Service) Refusal(ctx context.Context, code string, claimed uuid.UUID) (refusal error, verify bool) {
	start := time.Now()
	arrived, _ := ctx.Value(arrivalKey{}).(time.Time)
	refusal, verify = s.engine.Refusal(code, claimed, arrived)
	if refusal != nil && !verify {
		s.record(ctx, code, claimed, start, refusal)
	}
	return refusal, verify
}

// Answered counts and logs err as the answer to an issue request for code by user that Issue
// did not serve (see Refusal).
func (s *Service) Answered(ctx context.Context, code string, user uuid.UUID, err error) {
	s.record(ctx, code, user, time.Now(), err)
}
