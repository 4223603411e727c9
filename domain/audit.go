package domain

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Actor is who makes an admin change, as the audit trail records it: a request-scoped value
// that the HTTP layer puts in the request's context and the repository writes, in the change's
// own transaction, next to the change.
type Actor struct {
	Name      string // a stable, non-secret name of the credential used ("admin-token:1a2b3c4d")
	Source    string // the client's address
	RequestID string // the request's id (X-Request-ID)
}

type actorKey struct{}

// WithActor returns ctx carrying the actor of the admin change made in it.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorOf returns the actor carried by ctx, if any.
func ActorOf(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// Audit actions: what an audit entry records.
const (
	ActionCreateCoupon   = "coupon.create"
	ActionUpdateCoupon   = "coupon.update"
	ActionCreateSchedule = "schedule.create"
)

// AuditEntry is one admin change (an admin_audit row): who, from where, in which request, what,
// and the changed row before and after, as PostgreSQL stored it (Before is null for a creation).
type AuditEntry struct {
	ID     uuid.UUID
	At     time.Time
	Actor  Actor
	Action string
	Target string // the coupon's code, the schedule's prefix
	Before json.RawMessage
	After  json.RawMessage
}
