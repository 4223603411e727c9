// Command couponsvc issues coupons first come first served: a per-coupon Redlock over
// independent Redis nodes serialises the issues of a coupon, and one PostgreSQL transaction
// checks and updates the counter and the wallet under it.
//
//	@title			couponsvc API
//	@version		1.0
//	@description	First-come-first-served coupon issuance: exactly the stock, never twice to one user, a 201 only after commit.
//	@BasePath		/
//
//	@securityDefinitions.apikey	BearerAuth
//	@in							header
//	@name						Authorization
//	@description				Identity mode (AUTH_JWKS_URL set): "Bearer " followed by an access token (a JWT) from the identity provider; the user is its subject. Demo mode: not needed, the user is the body's or the path's userId.
//
//	@securityDefinitions.apikey	AdminToken
//	@in							header
//	@name						Authorization
//	@description				"Bearer " followed by ADMIN_TOKEN; the admin routes exist only when ADMIN_TOKEN is set, and only on the ADMIN_ADDR listener when that is set.
package main

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	_ "time/tzdata" // schedules name IANA time zones; the binary must not depend on the host's zoneinfo

	_ "couponsvc/docs" // the OpenAPI document served by /swagger
	"couponsvc/engine"
	"couponsvc/handler"
	"couponsvc/internal/arrival"
	"couponsvc/internal/auth"
	"couponsvc/internal/metrics"
	"couponsvc/internal/notify"
	"couponsvc/internal/peer"
	"couponsvc/lock"
	"couponsvc/repository"
	"couponsvc/service"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// version is stamped at build time: -ldflags "-X main.version=...".
var version = "dev"

const (
	// shutdownDrain is how long in-flight requests may take to finish after SIGTERM (contract).
	shutdownDrain = 10 * time.Second
	// startupWait is how long serve and migrate wait for PostgreSQL to accept connections,
	// so pods may start before their database.
	startupWait = 60 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "couponsvc:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests call it with their own arguments and environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runWith(ctx, args, getenv, stdout, stderr, nil)
}

// runWith is run, with spans (when not nil) receiving every span, traces on: the tests'
// recorder of the spans.
func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, spans sdktrace.SpanProcessor) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve", "migrate":
	case "version":
		fmt.Fprintln(stdout, "couponsvc", version)
		return nil
	case "help":
		fmt.Fprintln(stdout, "usage: couponsvc [serve|migrate|version] [flags]; couponsvc serve -h lists the settings")
		return nil
	default:
		return fmt.Errorf("unknown command %q (want serve, migrate or version)", cmd)
	}
	cfg, err := loadConfig("couponsvc "+cmd, args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	var traces *tracing
	if cmd == "serve" {
		if traces, err = newTracing(ctx, cfg, getenv, spans); err != nil {
			return err
		}
		if traces != nil {
			log = slog.New(traceLog{log.Handler()})
		}
		defer traces.shutdown(log) // last: the spans of the requests drained at shutdown are flushed too
	}

	pool, err := repository.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	repo := repository.New(pool)
	if cmd == "migrate" || cfg.MigrateOnStart {
		if err := migrate(ctx, repo, cfg, log); err != nil {
			return err
		}
	} else if err := awaitSchema(ctx, repo, cfg, log); err != nil {
		return err
	}
	if cmd == "migrate" {
		log.Info("migrations applied", "seed_demo", cfg.SeedDemo)
		return nil
	}
	return serve(ctx, cfg, repo, log, traces.tracerProvider())
}

// awaitSchema is serve's start when it does not migrate (MIGRATE_ON_START=false: its role may
// not change the schema): it waits, up to startupWait, for every migration to be applied by
// `couponsvc migrate` (an init container or a Job, with the migration role), so that it never
// serves a schema older than its code.
func awaitSchema(ctx context.Context, repo *repository.Repository, cfg config, log *slog.Logger) error {
	wctx, cancel := context.WithTimeout(ctx, startupWait)
	defer cancel()
	for attempt := 1; ; attempt++ {
		pending, err := repo.PendingMigrations(wctx)
		if err == nil && len(pending) == 0 {
			return nil
		}
		if err != nil && !errors.Is(err, domain.ErrUnavailable) {
			return fmt.Errorf("check migrations (database %s): %w", redactDSN(cfg.DatabaseURL), err)
		}
		if wctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("check migrations (database %s): %w", redactDSN(cfg.DatabaseURL), err)
			}
			return fmt.Errorf("database %s lacks migrations %v: with MIGRATE_ON_START=false run `couponsvc migrate` with the migration role's DATABASE_URL first",
				redactDSN(cfg.DatabaseURL), pending)
		}
		log.Warn("waiting for the schema (MIGRATE_ON_START=false: couponsvc migrate applies it)", "database", redactDSN(cfg.DatabaseURL),
			"attempt", attempt, "pending", pending, "err", err)
		select {
		case <-wctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// migrate applies the schema (and seeds), waiting for PostgreSQL to come up.
func migrate(ctx context.Context, repo *repository.Repository, cfg config, log *slog.Logger) error {
	wctx, cancel := context.WithTimeout(ctx, startupWait)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := repo.Migrate(wctx)
		if err == nil && cfg.SeedDemo {
			err = repo.SeedDemo(wctx)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, domain.ErrUnavailable) || wctx.Err() != nil {
			return fmt.Errorf("migrate (database %s): %w", redactDSN(cfg.DatabaseURL), err)
		}
		log.Warn("waiting for PostgreSQL", "database", redactDSN(cfg.DatabaseURL), "attempt", attempt, "err", err)
		select {
		case <-wctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// advertiseAddr is the address at which the other instances reach this one when
// ADVERTISE_ADDR is not set: the listener's own IP, or, when it listens on every interface,
// this host's first non-loopback IPv4 (a pod's IP), with the listener's port.
func advertiseAddr(l *net.TCPAddr) string {
	port := strconv.Itoa(l.Port)
	if !l.IP.IsUnspecified() {
		return net.JoinHostPort(l.IP.String(), port)
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return net.JoinHostPort(n.IP.String(), port)
		}
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// redactDSN drops the password from a DSN so that it can be logged.
func redactDSN(dsn string) string {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	c := pcfg.ConnConfig
	return fmt.Sprintf("postgres://%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// identity is the verifier of identity mode (nil in demo mode, which says so in one WARN line):
// it fetches the provider's JWK Set now and keeps it fresh until ctx ends.
func identity(ctx context.Context, cfg config, log *slog.Logger) (*auth.Verifier, error) {
	if cfg.Auth.JWKSURL == "" {
		log.Warn("demo mode: identities are NOT verified, the user is whoever the request says; " +
			"set AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE for identity mode (verified access tokens)")
		return nil, nil
	}
	if u, _ := url.Parse(cfg.Auth.JWKSURL); u.Scheme != "https" && !isLoopback(u.Hostname()) {
		log.Warn("AUTH_JWKS_URL is not https: anyone on the path to it can substitute the keys", "url", cfg.Auth.JWKSURL)
	}
	ac := cfg.Auth
	ac.Log = log
	v, err := auth.New(ctx, ac)
	if err != nil {
		return nil, err
	}
	log.Info("identity mode: bearer tokens verified", "jwks_url", ac.JWKSURL, "issuer", ac.Issuer,
		"audience", ac.Audience, "algorithms", ac.Algorithms, "clock_skew", ac.ClockSkew.String(), "redeem_scope", ac.RedeemScope)
	return v, nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// serve runs the HTTP server until ctx ends; tp is nil when traces are off.
func serve(ctx context.Context, cfg config, repo *repository.Repository, log *slog.Logger, tp trace.TracerProvider) error {
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var adminLn net.Listener
	if cfg.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen (ADMIN_ADDR): %w", err)
		}
	}
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = advertiseAddr(ln.Addr().(*net.TCPAddr))
	}
	if !cfg.ClusterKey.Enabled() {
		log.Warn("CLUSTER_KEY is not set: requests forwarded between instances and notices on Redis are not authenticated; set it (the same 32+ random bytes on every instance) when running more than one")
	}
	nodes := lock.NewNodes(cfg.RedisAddrs, cfg.RedisUsername, cfg.RedisPassword)
	// Each grant of a coupon's lock carries this instance's address: the others forward that
	// coupon's requests to it (engine/forward.go).
	locks := lock.New(nodes, lock.WithWatchdogTimeout(cfg.LockWatchdog), lock.WithHolderInfo(peer.HolderInfo(cfg.ClusterKey, advertise)))
	defer locks.Close()

	m := metrics.New()
	svc := service.New(repo, engine.NewLocker(locks), service.Config{Engine: engine.Config{
		LockWait: cfg.LockWait, LockLease: cfg.LockLease,
		Advertise: advertise, Peers: peer.NewClient(cfg.ClusterKey),
		Bus:    notify.New(nodes, "couponsvc:coupon-changed", cfg.ClusterKey),
		Facts:  notify.New(nodes, "couponsvc:coupon-facts", cfg.ClusterKey),
		Tracer: tracer(tp, "couponsvc/engine"),
	},
		// The user reads take at most a quarter of the pool; the issue batches keep the rest.
		ReadConns: max(1, repo.MaxConns()/4),
	}, m, log)
	// Background work (coupon changes from other pods, daily schedules) until shutdown.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	bgDone := make(chan struct{})
	go func() { defer close(bgDone); svc.Run(bgCtx) }()
	defer func() { stopBackground(); <-bgDone }()
	if err := svc.Warm(ctx); err != nil {
		log.Warn("loading coupons at start", "err", err) // they load on first use instead
	}
	verifier, err := identity(bgCtx, cfg, log)
	if err != nil {
		ln.Close()
		if adminLn != nil {
			adminLn.Close()
		}
		return err
	}
	gin.SetMode(gin.ReleaseMode)
	h := handler.New(svc, m, log, handler.Config{MaxInFlight: cfg.MaxInFlight, AdminToken: cfg.AdminToken,
		ClusterKey: cfg.ClusterKey, Identity: verifier, SeparateAdmin: adminLn != nil, Tracer: tracer(tp, "couponsvc/handler")})

	srv := newServer(ctx, cfg, cfg.HTTPAddr, h, log)
	log.Info("serving", "addr", ln.Addr().String(), "advertise", advertise, "version", version,
		"redis_nodes", len(cfg.RedisAddrs), "lock_wait", cfg.LockWait.String(), "lock_lease", cfg.LockLease.String(),
		"lock_watchdog_timeout", cfg.LockWatchdog.String(),
		"database", redactDSN(cfg.DatabaseURL), "admin_api", cfg.AdminToken != "", "identity_mode", verifier != nil,
		"traces", tp != nil)

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(arrival.Listen(ln)) }()
	servers := []*http.Server{srv}
	if adminLn != nil {
		adminSrv := newServer(ctx, cfg, cfg.AdminAddr, h.Admin(), log)
		servers = append(servers, adminSrv)
		log.Info("serving the admin routes on their own listener", "admin_addr", adminLn.Addr().String())
		go func() { errc <- adminSrv.Serve(adminLn) }()
	}
	select {
	case err := <-errc:
		for _, s := range servers {
			s.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "drain", shutdownDrain.String())
	svc.Drain() // hand the coupons this instance owns over to the others

	sctx, cancel := context.WithTimeout(context.Background(), shutdownDrain)
	defer cancel()
	// Both listeners drain at once, within the one drain period.
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.Shutdown(sctx); err != nil {
				log.Error("drain incomplete", "addr", s.Addr, "err", err)
			}
		})
	}
	wg.Wait() // bounded: Shutdown returns when sctx ends
	// Every owner lets go of its coupons (Drain) once its queue is served: wait for it, so that
	// closing the lock client leaves no lock to run out its lease.
	if err := svc.Drained(sctx); err != nil {
		log.Warn("coupons still owned at shutdown; their locks run out within the watchdog lease", "err", err)
	}
	stopBackground()
	<-bgDone // before the lock client closes the Redis clients the bus listens on
	// Each request releases its own lock before it answers; Close stops what is left
	// (watchdogs, subscriptions) so no lock waits out its lease.
	if err := locks.Close(); err != nil {
		log.Warn("closing lock client", "err", err)
	}
	log.Info("stopped")
	return nil
}

// newServer is the HTTP server of one listener.
func newServer(ctx context.Context, cfg config, addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// An issue may wait LOCK_WAIT for the lock and then run its transaction.
		WriteTimeout:   cfg.LockWait + 15*time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:    arrival.ConnContext,
	}
}
