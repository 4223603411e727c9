// Package peer carries issue requests between couponsvc instances over HTTP: a batch for one
// coupon, forwarded to the instance that owns the coupon or relayed to any instance (see the
// engine package's forward.go). It is the wire format and the client; the handler package
// serves Path.
package peer

import (
	"couponsvc/domain"
	"couponsvc/internal/seal"
	"errors"
	"strings"

	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"couponsvc/engine"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Route is the peer endpoint's route. It is for the instances only: the Ingress routes
// /api/v1 and /swagger, never /internal.
const Route = "/internal/v1/batch"

// MaxBody bounds a batch's encoded size (about 60 bytes a request), and MaxRequests the
// requests it carries.
const (
	MaxBody     = 4 << 20
	MaxRequests = 32768
)

type batch struct {
	From    string   `json:"from"`
	Coupons []coupon `json:"coupons"`
}

type coupon struct {
	Code     string    `json:"code"`
	Relay    bool      `json:"relay,omitempty"`
	Requests []request `json:"requests"`
}

type request struct {
	User    uuid.UUID `json:"u"`
	Arrived int64     `json:"a"`           // Unix ns at the host that received it
	Wallet  uuid.UUID `json:"w"`           // the id of its row if issued (absent from older versions: the receiver chooses)
	Trace   string    `json:"t,omitempty"` // the request's span at the sender, a W3C traceparent (traces on)
}

type results struct {
	Results [][]result `json:"results"`
}

type result struct {
	Result string `json:"r"`
	Entry  *entry `json:"e,omitempty"`
	Batch  string `json:"b,omitempty"` // the span of the batch that decided it, a W3C traceparent (traces on)
}

type entry struct {
	ID             uuid.UUID `json:"id"`
	CouponCode     string    `json:"couponCode"`
	UserID         uuid.UUID `json:"userId"`
	DiscountAmount int64     `json:"discountAmount"`
	IssuedAt       time.Time `json:"issuedAt"`
	ExpiresAt      time.Time `json:"expiresAt"`
}

// MACHeader carries a batch's MAC (package seal) over the route and the body, and a reply's
// over the batch's MAC and the reply's body: with the instances' shared key, a batch from
// anything else is refused, and a reply from anything else is not believed.
const MACHeader = "X-Couponsvc-Mac"

// ErrUnauthenticated is a batch or reply without the right MAC.
var ErrUnauthenticated = errors.New("peer: not authenticated by the instances' key")

// Client sends batches to other instances. It is safe for concurrent use.
type Client struct {
	hc  *http.Client
	key seal.Key
}

// NewClient returns a Client that keeps connections to the other instances open and
// authenticates with key (nil: no authentication).
func NewClient(key seal.Key) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &Client{hc: &http.Client{Transport: tr}, key: key}
}

// HolderInfo is what an instance at addr stores with each grant of a coupon's lock so that the
// others find the owner (lock.WithHolderInfo): the address, and with a key its MAC, so that
// whoever can write to Redis cannot point the instances at an address of its choosing (they
// would send it their users' requests).
func HolderInfo(key seal.Key, addr string) string {
	if !key.Enabled() {
		return addr
	}
	return addr + "," + key.Sum([]byte("owner"), []byte(addr))
}

// Owner implements engine.Peers: the address in a lock's holder info (HolderInfo), when its
// MAC is right; ok false otherwise (or for no holder).
func (c *Client) Owner(info string) (addr string, ok bool) {
	addr, mac, sealed := strings.Cut(info, ",")
	switch {
	case addr == "":
		return "", false
	case !c.key.Enabled():
		return addr, true
	case !sealed || !c.key.Verify(mac, []byte("owner"), []byte(addr)):
		return "", false
	}
	return addr, true
}

// Send implements engine.Peers: it posts the batch to the instance at addr (host:port) and
// returns its results, one slice per coupon.
func (c *Client) Send(ctx context.Context, addr string, b engine.PeerBatch) ([][]engine.PeerResult, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("peer address %q: %w", addr, err)
	}
	w := batch{From: b.From, Coupons: make([]coupon, len(b.Coupons))}
	for i, pc := range b.Coupons {
		w.Coupons[i] = coupon{Code: pc.Code, Relay: pc.Relay, Requests: make([]request, len(pc.Requests))}
		for j, r := range pc.Requests {
			w.Coupons[i].Requests[j] = request{User: r.User, Arrived: r.Arrived.UnixNano(), Wallet: r.Wallet, Trace: traceparent(r.Trace)}
		}
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+Route, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	mac := c.key.Sum([]byte(Route), body)
	req.Header.Set(MACHeader, mac)
	// The call's span (traces on), which the receiver's server span continues; nothing
	// without one. Outside the MAC: a forged one could only misplace a span.
	traceContext.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("peer %s: %s: %s", addr, resp.Status, bytes.TrimSpace(msg))
	}
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 4*MaxBody))
	if err != nil {
		return nil, fmt.Errorf("peer %s: results: %w", addr, err)
	}
	if !c.key.Verify(resp.Header.Get(MACHeader), []byte(mac), reply) {
		return nil, fmt.Errorf("peer %s: results: %w", addr, ErrUnauthenticated)
	}
	var rs results
	if err := json.Unmarshal(reply, &rs); err != nil {
		return nil, fmt.Errorf("peer %s: results: %w", addr, err)
	}
	out := make([][]engine.PeerResult, len(rs.Results))
	for i, cr := range rs.Results {
		out[i] = make([]engine.PeerResult, len(cr))
		for j, r := range cr {
			out[i][j].Result = r.Result
			out[i][j].Batch = spanContext(r.Batch)
			if e := r.Entry; e != nil {
				out[i][j].Entry = domain.WalletEntry{ID: e.ID, CouponCode: e.CouponCode, UserID: e.UserID,
					DiscountAmount: e.DiscountAmount, IssuedAt: e.IssuedAt, ExpiresAt: e.ExpiresAt}
			}
		}
	}
	return out, nil
}

// ReadBatch reads a batch from a request (at most MaxBody bytes, MaxRequests requests), checks
// its MAC under key (ErrUnauthenticated), and returns it with the MAC, for the reply's.
func ReadBatch(r *http.Request, key seal.Key) (engine.PeerBatch, string, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return engine.PeerBatch{}, "", fmt.Errorf("%w: peer batch: %w", domain.ErrInvalid, err)
	}
	mac := r.Header.Get(MACHeader)
	if !key.Verify(mac, []byte(Route), body) {
		return engine.PeerBatch{}, "", ErrUnauthenticated
	}
	b, err := DecodeBatch(bytes.NewReader(body))
	return b, mac, err
}

// ReplyMAC is the MAC of a reply body to the batch that carried batchMAC.
func ReplyMAC(key seal.Key, batchMAC string, body []byte) string {
	return key.Sum([]byte(batchMAC), body)
}

// DecodeBatch reads a batch from a request body (at most MaxBody bytes, MaxRequests requests).
func DecodeBatch(r io.Reader) (engine.PeerBatch, error) {
	var w batch
	dec := json.NewDecoder(io.LimitReader(r, MaxBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return engine.PeerBatch{}, fmt.Errorf("%w: peer batch: %w", domain.ErrInvalid, err)
	}
	if _, _, err := net.SplitHostPort(w.From); err != nil {
		return engine.PeerBatch{}, fmt.Errorf("%w: peer batch: from %q: %w", domain.ErrInvalid, w.From, err)
	}
	b := engine.PeerBatch{From: w.From, Coupons: make([]engine.PeerCoupon, len(w.Coupons))}
	n := 0
	for i, c := range w.Coupons {
		if !domain.ValidCode(c.Code) || len(c.Requests) == 0 {
			return engine.PeerBatch{}, fmt.Errorf("%w: peer batch: coupon %q with %d requests", domain.ErrInvalid, c.Code, len(c.Requests))
		}
		if n += len(c.Requests); n > MaxRequests {
			return engine.PeerBatch{}, fmt.Errorf("%w: peer batch: over %d requests", domain.ErrInvalid, MaxRequests)
		}
		pc := engine.PeerCoupon{Code: c.Code, Relay: c.Relay, Requests: make([]engine.PeerRequest, len(c.Requests))}
		for j, r := range c.Requests {
			if r.User == uuid.Nil {
				return engine.PeerBatch{}, fmt.Errorf("%w: peer batch: nil user", domain.ErrInvalid)
			}
			pc.Requests[j] = engine.PeerRequest{User: r.User, Arrived: time.Unix(0, r.Arrived), Wallet: r.Wallet,
				Trace: spanContext(r.Trace)}
		}
		b.Coupons[i] = pc
	}
	if len(b.Coupons) == 0 {
		return engine.PeerBatch{}, fmt.Errorf("%w: peer batch: no coupons", domain.ErrInvalid)
	}
	return b, nil
}

// EncodeResults writes the results of a batch.
func EncodeResults(rs [][]engine.PeerResult) ([]byte, error) {
	w := results{Results: make([][]result, len(rs))}
	for i, cr := range rs {
		w.Results[i] = make([]result, len(cr))
		for j, r := range cr {
			w.Results[i][j].Result = r.Result
			w.Results[i][j].Batch = traceparent(r.Batch)
			if r.Entry.ID != uuid.Nil {
				e := r.Entry
				w.Results[i][j].Entry = &entry{ID: e.ID, CouponCode: e.CouponCode, UserID: e.UserID,
					DiscountAmount: e.DiscountAmount, IssuedAt: e.IssuedAt, ExpiresAt: e.ExpiresAt}
			}
		}
	}
	return json.Marshal(w)
}

// traceContext writes and reads W3C trace context: the call's, in its headers, and each
// request's and result's span, in the body.
var traceContext propagation.TraceContext

// traceparent is sc as a W3C traceparent, or "" when sc is not valid (traces off: the field is
// left out, and the batch is what older versions send).
func traceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
	return c["traceparent"]
}

// spanContext reads a traceparent written by traceparent; anything else is no span context.
func spanContext(tp string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(traceContext.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp}))
}
