// Package auth verifies the bearer tokens of identity mode: OIDC access tokens (JWTs) signed by
// the identity provider's keys, published as a JWK Set at AUTH_JWKS_URL. The user is the token's
// subject.
//
// The JOSE work is done by well-kept libraries: github.com/golang-jwt/jwt/v5 parses the token,
// checks the algorithm against an allow-list, verifies the signature and the registered claims
// (iss, aud, exp, nbf, iat); github.com/MicahParks/keyfunc/v3 finds the key by the token's kid
// and refuses a key published for another algorithm or use; github.com/MicahParks/jwkset parses
// the JWK Set. This package decides when the JWK Set is fetched (keys.go), maps subjects to user
// ids and says why a token was refused.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Defaults of the optional settings.
const (
	DefaultAlgorithms  = "RS256"
	DefaultClockSkew   = 30 * time.Second
	DefaultRedeemScope = "coupons:redeem"
	// MaxTokenBytes bounds the bearer token: identity providers' access tokens are a few hundred
	// bytes to a few KiB. A longer one is refused before any decoding.
	MaxTokenBytes = 8 << 10
)

// Algorithms are the signature algorithms AUTH_ALGORITHMS may allow: asymmetric ones only. The
// HMAC algorithms (HS256...) are never accepted: their key is a shared secret, and a verifier
// that took a published public key as an HMAC secret would accept tokens anyone can make.
// "none" is never accepted.
var Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config says whom to trust.
type Config struct {
	JWKSURL     string        // the provider's JWK Set (AUTH_JWKS_URL)
	Issuer      string        // the exact iss of its tokens (AUTH_ISSUER)
	Audience    string        // an aud the tokens must carry: this API (AUTH_AUDIENCE)
	Algorithms  []string      // accepted alg values; default RS256
	ClockSkew   time.Duration // leeway on exp, nbf and iat (AUTH_CLOCK_SKEW)
	RedeemScope string        // the scope of a service that may redeem anyone's coupon
	// RefreshInterval is how often the JWK Set is fetched again (default 15 min);
	// MinRefreshInterval is the least time between two fetches caused by tokens with an unknown
	// kid (default 10 s, as Keycloak's adapters).
	RefreshInterval, MinRefreshInterval time.Duration
	HTTPClient                          *http.Client // default: 5 s timeout
	Log                                 *slog.Logger
}

// Identity is who a verified token says the caller is.
type Identity struct {
	User      uuid.UUID // the user id: the subject when it is a UUID, else UserID(issuer, subject)
	Subject   string    // the token's sub
	CanRedeem bool      // the token carries the redeem scope (an order service)
}

// Error is a refused request: no bearer token, or one that failed verification.
type Error struct {
	Reason  string // short and stable, for metrics: missing, malformed, algorithm, unknown_key, ...
	Message string // for people, in the error body and the WWW-Authenticate header
	Err     error  // the library's error, if any (for logs)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Missing reports whether the request carried no bearer token at all (RFC 6750 then sends no
// error code in WWW-Authenticate).
func (e *Error) Missing() bool { return e.Reason == ReasonMissing }

// Reasons a token is refused.
const (
	ReasonMissing     = "missing"
	ReasonMalformed   = "malformed"
	ReasonAlgorithm   = "algorithm"
	ReasonUnknownKey  = "unknown_key"
	ReasonSignature   = "signature"
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not_yet_valid"
	ReasonIssuer      = "issuer"
	ReasonAudience    = "audience"
	ReasonClaims      = "claims"
)

// Reasons lists every reason, for metrics initialised at zero.
var Reasons = []string{ReasonMissing, ReasonMalformed, ReasonAlgorithm, ReasonUnknownKey, ReasonSignature,
	ReasonExpired, ReasonNotYetValid, ReasonIssuer, ReasonAudience, ReasonClaims}

// Verifier verifies bearer tokens against the provider's cached JWK Set.
type Verifier struct {
	cfg       Config
	keys      *keySet
	keyfunc   keyfunc.Keyfunc
	parser    *jwt.Parser
	namespace uuid.UUID // of UserID, for this issuer
	verified  *verified // tokens verified recently
	now       func() time.Time
	full      atomic.Int64 // full verifications (signature and claims)
}

// Verifications is how many tokens were verified in full (signature and claims), as opposed to
// found among those verified recently.
func (v *Verifier) Verifications() int64 { return v.full.Load() }

// New checks cfg, fetches the JWK Set once (a provider that cannot be reached yet is logged and
// tried again on the first token; the service starts anyway) and keeps it fresh until ctx ends.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 15 * time.Minute
	}
	if cfg.MinRefreshInterval <= 0 {
		cfg.MinRefreshInterval = 10 * time.Second
	}
	keys := newKeySet(cfg)
	// Keys published for signing, or with no use said (many JWK Sets leave it out); never an
	// encryption key. keyfunc also refuses a key whose alg differs from the token's.
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: keys, UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	v := &Verifier{cfg: cfg, keys: keys, keyfunc: kf, namespace: Namespace(cfg.Issuer), verified: newVerified(cacheEntries), now: time.Now}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.ClockSkew),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	)
	keys.start(ctx)
	return v, nil
}

func (c *Config) check() error {
	var errs []error
	if c.JWKSURL == "" || c.Issuer == "" || c.Audience == "" {
		errs = append(errs, errors.New("the JWK Set URL, the issuer and the audience are all required"))
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{DefaultAlgorithms}
	}
	for _, a := range c.Algorithms {
		if err := CheckAlgorithm(a); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ClockSkew < 0 || c.ClockSkew > 5*time.Minute {
		errs = append(errs, fmt.Errorf("clock skew %v: want 0 to 5m", c.ClockSkew))
	}
	if c.RedeemScope == "" {
		c.RedeemScope = DefaultRedeemScope
	}
	if len(errs) > 0 {
		return fmt.Errorf("auth: %w", errors.Join(errs...))
	}
	return nil
}

// CheckAlgorithm says why alg cannot be allowed (nil when it can).
func CheckAlgorithm(alg string) error {
	switch {
	case slices.Contains(Algorithms, alg):
		return nil
	case strings.EqualFold(alg, "none"):
		return errors.New(`algorithm "none" is never accepted: such a token has no signature`)
	case strings.HasPrefix(strings.ToUpper(alg), "HS"):
		return fmt.Errorf("algorithm %q is never accepted: HMAC keys are shared secrets, not published keys", alg)
	default:
		return fmt.Errorf("unknown algorithm %q (want some of %s)", alg, strings.Join(Algorithms, ", "))
	}
}

// Issuer is the iss the tokens must carry.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// claims are the claims read from an access token. scope (RFC 8693, RFC 9068: a space-separated
// string) and scp (an array, as some providers write it) both carry scopes.
type claims struct {
	jwt.RegisteredClaims
	Scope jwt.ClaimStrings `json:"scope,omitempty"`
	Scp   jwt.ClaimStrings `json:"scp,omitempty"`
}

// Validate is called by the parser after the registered claims: a token without a subject names
// nobody.
func (c *claims) Validate() error {
	if c.Subject == "" {
		return fmt.Errorf("%w: sub", jwt.ErrTokenRequiredClaimMissing)
	}
	return nil
}

func (c *claims) hasScope(scope string) bool {
	for _, list := range []jwt.ClaimStrings{c.Scope, c.Scp} {
		for _, s := range list {
			if slices.Contains(strings.Fields(s), scope) {
				return true
			}
		}
	}
	return false
}

// Verify verifies the bearer token in an Authorization header value and returns who it names.
// Every failure is an *Error. It does no network work except when the token names a key the
// cached JWK Set lacks (then the set is fetched again, at most once per MinRefreshInterval).
func (v *Verifier) Verify(ctx context.Context, authorization string) (Identity, error) {
	raw, ok := bearer(authorization)
	if !ok {
		return Identity{}, &Error{Reason: ReasonMissing, Message: "this route needs Authorization: Bearer <access token>"}
	}
	if len(raw) > MaxTokenBytes {
		return Identity{}, &Error{Reason: ReasonMalformed, Message: fmt.Sprintf("the bearer token is over %d bytes", MaxTokenBytes)}
	}
	if !compactJWS(raw) {
		return Identity{}, &Error{Reason: ReasonMalformed, Message: "the bearer token is not a JWT (three base64url parts)"}
	}
	// A token verified recently against the same keys, and not expired, is not verified again.
	sum := sha256.Sum256([]byte(raw))
	gen, now := v.keys.generation(), v.now()
	if id, ok := v.verified.get(sum, now, gen); ok {
		return id, nil
	}
	v.full.Add(1)
	var c claims
	tok, err := v.parser.ParseWithClaims(raw, &c, v.keyfunc.KeyfuncCtx(ctx))
	if err != nil {
		return Identity{}, v.refusal(tok, err)
	}
	id := Identity{User: v.UserID(c.Subject), Subject: c.Subject, CanRedeem: c.hasScope(v.cfg.RedeemScope)}
	v.verified.put(sum, verifiedToken{id: id, expires: c.ExpiresAt.Time.Add(v.cfg.ClockSkew), keys: gen})
	return id, nil
}

// Claimed is the user a bearer token names, NOT verified: its payload's sub, read without
// checking the signature or any claim (ok false when the header holds no token of a JWT's shape
// or no subject). It lets a caller give answers that do not depend on who asks before paying for
// a verification (see service.Refusal); it must never decide anything private to that user.
func (v *Verifier) Claimed(authorization string) (user uuid.UUID, ok bool) {
	raw, ok := bearer(authorization)
	if !ok || len(raw) > MaxTokenBytes || !compactJWS(raw) {
		return uuid.Nil, false
	}
	_, rest, ok := strings.Cut(raw, ".")
	payload, _, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return uuid.Nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return uuid.Nil, false
	}
	var c struct {
		Subject string `json:"sub"`
	}
	if json.Unmarshal(b, &c) != nil || c.Subject == "" {
		return uuid.Nil, false
	}
	return v.UserID(c.Subject), true
}

// refusal says why the parser refused a token.
func (v *Verifier) refusal(tok *jwt.Token, err error) *Error {
	e := &Error{Err: err}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		e.Reason, e.Message = ReasonMalformed, "the bearer token is malformed"
	case tok != nil && (tok.Method == nil || !slices.Contains(v.cfg.Algorithms, tok.Method.Alg())):
		e.Reason, e.Message = ReasonAlgorithm, "the bearer token's algorithm is not accepted"
	case errors.Is(err, jwkset.ErrKeyNotFound):
		e.Reason, e.Message = ReasonUnknownKey, "the bearer token is signed by an unknown key"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		e.Reason, e.Message = ReasonUnknownKey, "the bearer token's key cannot be used for it"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		e.Reason, e.Message = ReasonSignature, "the bearer token's signature is invalid"
	case errors.Is(err, jwt.ErrTokenExpired):
		e.Reason, e.Message = ReasonExpired, "the bearer token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		e.Reason, e.Message = ReasonNotYetValid, "the bearer token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		e.Reason, e.Message = ReasonIssuer, "the bearer token is from another issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		e.Reason, e.Message = ReasonAudience, "the bearer token is for another audience"
	default:
		e.Reason, e.Message = ReasonClaims, "the bearer token's claims are invalid"
	}
	return e
}

// bearer returns the token of an Authorization header value "Bearer <token>" (the scheme is
// case-insensitive, RFC 7235).
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimLeft(tok, " ")
	return tok, tok != ""
}

// compactJWS reports whether s has the shape of a JWS in compact serialization: base64url
// characters and dots only (the parser checks that there are exactly three parts).
func compactJWS(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Namespace is the name-based UUID namespace of an issuer's subjects: the RFC 9562 version 5
// UUID of the issuer in the URL namespace.
func Namespace(issuer string) uuid.UUID { return uuid.NewSHA1(uuid.NameSpaceURL, []byte(issuer)) }

// UserID is the user id of a token's subject. A subject that is a UUID in canonical form
// (36 lower-case characters, not the nil UUID) is the user id as it is: providers such as
// Keycloak and Cognito use UUID subjects, and the wallet rows then carry the provider's own id.
// Any other subject ("auth0|65f0…", Dex's encoded ids) becomes the version 5 UUID of the subject
// in Namespace(issuer): stable, so the same person is always the same user, and distinct for
// distinct issuers and subjects.
func (v *Verifier) UserID(subject string) uuid.UUID { return userID(v.namespace, subject) }

// UserID is Verifier.UserID for an issuer, without a verifier (tools that mint tokens use it).
func UserID(issuer, subject string) uuid.UUID { return userID(Namespace(issuer), subject) }

func userID(ns uuid.UUID, subject string) uuid.UUID {
	if len(subject) == 36 {
		if id, err := uuid.Parse(subject); err == nil && id != uuid.Nil && id.String() == subject {
			return id
		}
	}
	return uuid.NewSHA1(ns, []byte(subject))
}
