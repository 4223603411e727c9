package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"couponsvc/internal/seal"
	"couponsvc/lock"
)

// config is the contract's configuration: environment variables, each overridable by a flag
// of the same name in kebab case (REDIS_ADDRS -> --redis-addrs).
type config struct {
	HTTPAddr      string
	DatabaseURL   string
	RedisAddrs    []string
	RedisPassword string
	LockWait      time.Duration
	LockLease     time.Duration
	LockWatchdog  time.Duration
	Advertise     string
	SeedDemo      bool
	MaxInFlight   int
	AdminToken    string
	ClusterKey    seal.Key
	LogLevel      slog.Level
}

// setting is one configuration variable with its contract default. A secret's value is never
// shown (in -h, in an error), not even the default taken from the environment.
type setting struct {
	env, def, usage string
	secret          bool
}

var settings = []setting{
	{"HTTP_ADDR", ":8080", "listen address", false},
	{"DATABASE_URL", "postgres://postgres@127.0.0.1:5432/coupon?sslmode=disable", "PostgreSQL (pgx DSN)", true},
	{"REDIS_ADDRS", "127.0.0.1:6379", "comma-separated independent Redis nodes (the lock's Redlock quorum)", false},
	{"REDIS_PASSWORD", "", "Redis password", true},
	{"LOCK_WAIT", "3s", "longest a request waits for a coupon's lock before answering 503", false},
	{"LOCK_LEASE", "0", "0 = watchdog mode (lease renewed while held); >0 = fixed lease", false},
	{"LOCK_WATCHDOG_TIMEOUT", lock.DefaultWatchdogTimeout.String(), "watchdog lease (Redisson's lockWatchdogTimeout), renewed at a third of it: a crashed holder frees a coupon within it", false},
	{"ADVERTISE_ADDR", "", "host:port at which the other instances reach this one (default: HTTP_ADDR's host, or this host's first non-loopback IPv4, and its port)", false},
	{"SEED_DEMO_COUPONS", "true", "create tiers A0001/B0001/C0001 if absent", false},
	{"MAX_INFLIGHT", "4096", "issue requests in progress per instance; beyond it, 429 at once", false},
	{"ADMIN_TOKEN", "", "bearer token for /api/v1/admin/*; empty disables those routes", true},
	{"CLUSTER_KEY", "", "key (at least 32 bytes) the instances share to authenticate the requests they forward to each other and their notices on Redis; empty: nothing is authenticated (one instance, or a demo)", true},
	{"LOG_LEVEL", "info", "debug, info, warn or error", false},
}

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
	cfg.DatabaseURL = get("DATABASE_URL")
	cfg.RedisPassword = *values["REDIS_PASSWORD"]
	cfg.AdminToken = *values["ADMIN_TOKEN"]
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
	if len(errs) > 0 {
		return config{}, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	return cfg, nil
}
