package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"couponsvc/internal/auth"
	"couponsvc/internal/seal"
	"couponsvc/lock"
)

// config is the service's configuration: environment variables, each overridable by a flag
// of the same name in kebab case (REDIS_ADDRS -> --redis-addrs).
type config struct {
	HTTPAddr       string
	AdminAddr      string // the admin routes' own listener; empty: they are served on HTTPAddr
	MigrateOnStart bool   // serve applies the migrations (and seeds) before serving
	DatabaseURL    string
	RedisAddrs     []string
	RedisUsername  string
	RedisPassword  string
	LockWait       time.Duration
	LockLease      time.Duration
	LockWatchdog   time.Duration
	Advertise      string
	SeedDemo       bool
	MaxInFlight    int
	AdminToken     string
	ClusterKey     seal.Key
	LogLevel       slog.Level
	// OTLPEndpoint is OTEL_EXPORTER_OTLP_ENDPOINT: set, traces are exported there (tracing.go).
	OTLPEndpoint string
	// Auth is identity mode's configuration; Auth.JWKSURL empty: demo mode.
	Auth auth.Config
}

// setting is one configuration variable with its contract default. A secret's value is never
// shown (in -h, in an error), not even the default taken from the environment.
type setting struct {
	env, def, usage string
	secret          bool
}

var settings = []setting{
	{"HTTP_ADDR", ":8080", "listen address", false},
	{"ADMIN_ADDR", "", "listen address of the admin routes (/api/v1/admin/*) alone, never routed by the Ingress; empty: they are served on HTTP_ADDR", false},
	{"DATABASE_URL", "postgres://postgres@127.0.0.1:5432/coupon?sslmode=disable", "PostgreSQL (pgx DSN)", true},
	{"REDIS_ADDRS", "127.0.0.1:6379", "comma-separated independent Redis nodes (the lock's Redlock quorum)", false},
	{"REDIS_USERNAME", "", "Redis ACL user (empty: the default user)", false},
	{"REDIS_PASSWORD", "", "Redis password", true},
	{"LOCK_WAIT", "3s", "longest a request waits for a coupon's lock before answering 503", false},
	{"LOCK_LEASE", "0", "0 = watchdog mode (lease renewed while held); >0 = fixed lease", false},
	{"LOCK_WATCHDOG_TIMEOUT", lock.DefaultWatchdogTimeout.String(), "watchdog lease (Redisson's lockWatchdogTimeout), renewed at a third of it: a crashed holder frees a coupon within it", false},
	{"ADVERTISE_ADDR", "", "host:port at which the other instances reach this one (default: HTTP_ADDR's host, or this host's first non-loopback IPv4, and its port)", false},
	{"SEED_DEMO_COUPONS", "true", "create tiers A0001/B0001/C0001 if absent", false},
	{"MIGRATE_ON_START", "true", "serve applies the migrations (and seeds) at start; false when its database role may not change the schema (couponsvc migrate runs with the migration role instead)", false},
	{"MAX_INFLIGHT", "4096", "issue requests in progress per instance, and as many wallet reads; beyond it, 429 at once", false},
	{"ADMIN_TOKEN", "", "bearer token (at least 32 characters) for /api/v1/admin/*; empty disables those routes", true},
	{"CLUSTER_KEY", "", "key (at least 32 bytes) the instances share to authenticate the requests they forward to each other and their notices on Redis; empty: nothing is authenticated (one instance, or a demo)", true},
	{"LOG_LEVEL", "info", "debug, info, warn or error", false},
	{"OTEL_EXPORTER_OTLP_ENDPOINT", "", "OpenTelemetry collector's OTLP/HTTP base URL (e.g. http://otel-collector:4318): traces on; empty: off (the other OTEL_* variables are the SDK's)", false},
	{"AUTH_JWKS_URL", "", "identity mode: the identity provider's JWK Set URL (empty: demo mode, identities not verified)", false},
	{"AUTH_ISSUER", "", "identity mode: the exact iss of the provider's access tokens", false},
	{"AUTH_AUDIENCE", "", "identity mode: the aud the access tokens must carry (this API)", false},
	{"AUTH_ALGORITHMS", auth.DefaultAlgorithms, "identity mode: comma-separated accepted signature algorithms (" + strings.Join(auth.Algorithms, ", ") + ")", false},
	{"AUTH_CLOCK_SKEW", auth.DefaultClockSkew.String(), "identity mode: leeway on the tokens' exp, nbf and iat (0 to 5m)", false},
	{"AUTH_REDEEM_SCOPE", auth.DefaultRedeemScope, "identity mode: the scope of a service token that may redeem any user's coupon (an order service)", false},
}

// minAdminToken is the shortest ADMIN_TOKEN accepted: the admin routes change stock and windows,
// and a short token is guessed.
const minAdminToken = 32

func flagName(env string) string { return strings.ToLower(strings.ReplaceAll(env, "_", "-")) }

// loadConfig reads the environment through getenv, then the flags in args.
func loadConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	values := map[string]*string{}
	secrets := map[string]string{}
	for _, s := range settings {
		v := s.def
		if e := getenv(s.env); e != "" {
			v = e
		}
		if s.secret { // the flag shows no default; the value is filled in after parsing
			values[s.env] = fs.String(flagName(s.env), "", s.usage+" ($"+s.env+"; secret: its value is never shown)")
			secrets[s.env] = v
			continue
		}
		values[s.env] = fs.String(flagName(s.env), v, s.usage+" ($"+s.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	for env, v := range secrets {
		if *values[env] == "" {
			*values[env] = v
		}
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	get := func(env string) string { return strings.TrimSpace(*values[env]) }

	var cfg config
	var errs []error
	bad := func(env, why string) { errs = append(errs, fmt.Errorf("%s: %s", env, why)) }
	cfg.HTTPAddr = get("HTTP_ADDR")
	cfg.AdminAddr = get("ADMIN_ADDR")
	if cfg.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.AdminAddr); err != nil {
			bad("ADMIN_ADDR", "must be host:port or :port such as :8081")
		} else if cfg.AdminAddr == cfg.HTTPAddr {
			bad("ADMIN_ADDR", "must differ from HTTP_ADDR: it is the admin routes' own listener")
		}
	}
	cfg.DatabaseURL = get("DATABASE_URL")
	cfg.RedisUsername = *values["REDIS_USERNAME"]
	cfg.RedisPassword = *values["REDIS_PASSWORD"]
	cfg.AdminToken = *values["ADMIN_TOKEN"]
	if cfg.AdminToken != "" && len(cfg.AdminToken) < minAdminToken {
		bad("ADMIN_TOKEN", fmt.Sprintf("must be at least %d characters (e.g. openssl rand -hex 32); empty disables the admin routes", minAdminToken))
	}
	if cfg.AdminAddr != "" && cfg.AdminToken == "" {
		bad("ADMIN_ADDR", "is set but ADMIN_TOKEN is not: without a token there are no admin routes to serve")
	}
	for _, a := range strings.Split(get("REDIS_ADDRS"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.RedisAddrs = append(cfg.RedisAddrs, a)
		}
	}
	if len(cfg.RedisAddrs) == 0 {
		bad("REDIS_ADDRS", "lists no node")
	}
	if cfg.DatabaseURL == "" {
		bad("DATABASE_URL", "is empty")
	}
	var err error
	if cfg.LockWait, err = time.ParseDuration(get("LOCK_WAIT")); err != nil || cfg.LockWait <= 0 {
		bad("LOCK_WAIT", "must be a positive duration such as 3s")
	}
	if cfg.LockLease, err = time.ParseDuration(get("LOCK_LEASE")); err != nil || cfg.LockLease < 0 {
		bad("LOCK_LEASE", "must be 0 (watchdog) or a positive duration such as 10s")
	}
	if cfg.LockWatchdog, err = time.ParseDuration(get("LOCK_WATCHDOG_TIMEOUT")); err != nil || cfg.LockWatchdog < 300*time.Millisecond {
		bad("LOCK_WATCHDOG_TIMEOUT", "must be a duration of at least 300ms such as 1.5s")
	}
	cfg.Advertise = get("ADVERTISE_ADDR")
	if cfg.Advertise != "" {
		if _, _, err := net.SplitHostPort(cfg.Advertise); err != nil {
			bad("ADVERTISE_ADDR", "must be host:port")
		}
	}
	if cfg.SeedDemo, err = strconv.ParseBool(get("SEED_DEMO_COUPONS")); err != nil {
		bad("SEED_DEMO_COUPONS", "must be true or false")
	}
	if cfg.MigrateOnStart, err = strconv.ParseBool(get("MIGRATE_ON_START")); err != nil {
		bad("MIGRATE_ON_START", "must be true or false")
	}
	if cfg.MaxInFlight, err = strconv.Atoi(get("MAX_INFLIGHT")); err != nil || cfg.MaxInFlight <= 0 {
		bad("MAX_INFLIGHT", "must be a positive integer")
	}
	if k := *values["CLUSTER_KEY"]; k != "" {
		if len(k) < seal.MinKeyLength {
			bad("CLUSTER_KEY", fmt.Sprintf("must be at least %d bytes (e.g. openssl rand -hex 32)", seal.MinKeyLength))
		}
		cfg.ClusterKey = seal.Key(k)
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(get("LOG_LEVEL"))); err != nil {
		bad("LOG_LEVEL", "must be debug, info, warn or error")
	}
	if cfg.OTLPEndpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT"); cfg.OTLPEndpoint != "" {
		if u, err := url.Parse(cfg.OTLPEndpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("OTEL_EXPORTER_OTLP_ENDPOINT", "must be an http(s) URL such as http://otel-collector:4318")
		}
	}
	cfg.Auth = auth.Config{JWKSURL: get("AUTH_JWKS_URL"), Issuer: get("AUTH_ISSUER"), Audience: get("AUTH_AUDIENCE"),
		RedeemScope: get("AUTH_REDEEM_SCOPE")}
	if cfg.Auth.JWKSURL == "" {
		// Demo mode. A half-configured identity mode must not fall back to it silently.
		for _, env := range []string{"AUTH_ISSUER", "AUTH_AUDIENCE"} {
			if get(env) != "" {
				bad(env, "is set but AUTH_JWKS_URL is not: set AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE for identity mode, or none of them for the demo mode")
			}
		}
	} else {
		if u, err := url.Parse(cfg.Auth.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("AUTH_JWKS_URL", "must be an http(s) URL such as https://id.example.com/realms/shop/protocol/openid-connect/certs")
		}
		for _, env := range []string{"AUTH_ISSUER", "AUTH_AUDIENCE"} {
			if get(env) == "" {
				bad(env, "is required in identity mode (AUTH_JWKS_URL is set)")
			}
		}
	}
	for _, a := range strings.Split(get("AUTH_ALGORITHMS"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			if err := auth.CheckAlgorithm(a); err != nil {
				bad("AUTH_ALGORITHMS", err.Error())
			}
			cfg.Auth.Algorithms = append(cfg.Auth.Algorithms, a)
		}
	}
	if len(cfg.Auth.Algorithms) == 0 {
		bad("AUTH_ALGORITHMS", "lists no algorithm")
	}
	if cfg.Auth.ClockSkew, err = time.ParseDuration(get("AUTH_CLOCK_SKEW")); err != nil || cfg.Auth.ClockSkew < 0 || cfg.Auth.ClockSkew > 5*time.Minute {
		bad("AUTH_CLOCK_SKEW", "must be a duration from 0 to 5m such as 30s")
	}
	if strings.ContainsAny(cfg.Auth.RedeemScope, " \t") || cfg.Auth.RedeemScope == "" {
		bad("AUTH_REDEEM_SCOPE", "must be one scope name, without spaces")
	}
	if len(errs) > 0 {
		return config{}, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	return cfg, nil
}
