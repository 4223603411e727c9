package main

// The reference design, ported faithfully from the Spring + Redisson original so that it can be
// measured next to couponsvc: Gin, a pgx pool with its default settings, and a redsync mutex
// with its DEFAULT options (8 s expiry, 32 tries, 50-250 ms random polling delay) over the same
// three Redis nodes. Per issue request:
//
//	lock "lock:coupon:{code}"            (not acquired -> 503 LOCK_TIMEOUT)
//	BEGIN
//	  SELECT the coupon row             (none -> 404)
//	  issued < total?                   (else 410 SOLD_OUT)
//	  a wallet row for this user?       (yes -> 409 ALREADY_ISSUED)
//	  INSERT the wallet row
//	  UPDATE issued_quantity + 1
//	COMMIT
//	unlock
//
// Every request of a coupon, the sold-out and duplicate ones too, goes through the lock. It uses
// couponsvc's schema (couponsvc migrate creates it) and the same HTTP API.

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredislib "github.com/redis/go-redis/v9"
)

type refServer struct {
	pool   *pgxpool.Pool
	rs     *redsync.Redsync
	nodes  []*goredislib.Client
	router *gin.Engine
}

// serveReference runs the reference design's server until SIGTERM. It reads DATABASE_URL,
// REDIS_ADDRS and HTTP_ADDR like couponsvc.
func serveReference() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL")) // pgx defaults
	if err != nil {
		return err
	}
	defer pool.Close()
	s := &refServer{pool: pool}
	var pools []redsyncredis.Pool
	for _, a := range strings.Split(os.Getenv("REDIS_ADDRS"), ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		opts := &goredislib.Options{Addr: a} // go-redis defaults: 10 connections per CPU
		if n, err := strconv.Atoi(os.Getenv("REFERENCE_REDIS_POOL_SIZE")); err == nil && n > 0 {
			opts.PoolSize = n // -reference-redis-pool: e.g. 64, Redisson's default pool size
		}
		c := goredislib.NewClient(opts)
		s.nodes = append(s.nodes, c)
		pools = append(pools, goredis.NewPool(c))
	}
	if len(pools) == 0 {
		return errors.New("REDIS_ADDRS lists no node")
	}
	s.rs = redsync.New(pools...)

	gin.SetMode(gin.ReleaseMode) // Spring Boot does not log every request either
	r := gin.New()
	r.Use(gin.Recovery())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.ready)
	r.POST("/api/v1/coupons/:code/issue", s.issue)
	r.GET("/api/v1/coupons", s.list)
	s.router = r

	addr := os.Getenv("HTTP_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	srv := &http.Server{Addr: addr, Handler: r, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	for _, n := range s.nodes {
		n.Close()
	}
	return err
}

func refError(c *gin.Context, status int, code, msg string) {
	c.JSON(status, gin.H{"error": gin.H{"code": code, "message": msg}})
}

func (s *refServer) ready(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		refError(c, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return
	}
	ok := 0
	for _, n := range s.nodes {
		if n.Ping(ctx).Err() == nil {
			ok++
		}
	}
	if ok < len(s.nodes)/2+1 {
		refError(c, http.StatusServiceUnavailable, "UNAVAILABLE", "no Redis quorum")
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}

type refWalletEntry struct {
	ID             string    `json:"id"`
	CouponCode     string    `json:"couponCode"`
	UserID         string    `json:"userId"`
	DiscountAmount int64     `json:"discountAmount"`
	IssuedAt       time.Time `json:"issuedAt"`
}

var (
	errRefNotFound = errors.New("COUPON_NOT_FOUND")
	errRefSoldOut  = errors.New("SOLD_OUT")
	errRefIssued   = errors.New("ALREADY_ISSUED")
)

func (s *refServer) issue(c *gin.Context) {
	var body struct {
		UserID string `json:"userId"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		refError(c, http.StatusBadRequest, "INVALID_REQUEST", err.Error())
		return
	}
	user, err := uuid.Parse(body.UserID)
	if err != nil {
		refError(c, http.StatusBadRequest, "INVALID_REQUEST", "userId must be a UUID")
		return
	}
	code := c.Param("code")
	ctx := c.Request.Context()

	m := s.rs.NewMutex("lock:coupon:" + code) // default options
	if err := m.LockContext(ctx); err != nil {
		c.Header("Retry-After", "1")
		refError(c, http.StatusServiceUnavailable, "LOCK_TIMEOUT", "lock not acquired: "+err.Error())
		return
	}
	entry, err := s.issueTx(ctx, code, user)
	_, _ = m.UnlockContext(context.WithoutCancel(ctx))

	switch {
	case err == nil:
		c.JSON(http.StatusCreated, entry)
	case errors.Is(err, errRefNotFound):
		refError(c, http.StatusNotFound, "COUPON_NOT_FOUND", "no coupon "+code)
	case errors.Is(err, errRefSoldOut):
		refError(c, http.StatusGone, "SOLD_OUT", "no coupons left")
	case errors.Is(err, errRefIssued):
		refError(c, http.StatusConflict, "ALREADY_ISSUED", "this user already holds this coupon")
	default:
		refError(c, http.StatusInternalServerError, "INTERNAL", err.Error())
	}
}

// issueTx is the reference's @Transactional issue: read the count, check, insert, increment.
func (s *refServer) issueTx(ctx context.Context, code string, user uuid.UUID) (refWalletEntry, error) {
	var e refWalletEntry
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return e, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var couponID uuid.UUID
	var discount int64
	var total, issued int
	err = tx.QueryRow(ctx, `SELECT id, discount_amount, total_quantity, issued_quantity FROM coupon WHERE code = $1`, code).
		Scan(&couponID, &discount, &total, &issued)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, errRefNotFound
	}
	if err != nil {
		return e, err
	}
	if issued >= total {
		return e, errRefSoldOut
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM coupon_wallet WHERE coupon_id = $1 AND user_id = $2)`,
		couponID, user).Scan(&exists); err != nil {
		return e, err
	}
	if exists {
		return e, errRefIssued
	}
	id := uuid.New()
	var issuedAt time.Time
	if err := tx.QueryRow(ctx, `INSERT INTO coupon_wallet (id, coupon_id, user_id, issued_at) VALUES ($1, $2, $3, now())
		RETURNING issued_at`, id, couponID, user).Scan(&issuedAt); err != nil {
		return e, err
	}
	if _, err := tx.Exec(ctx, `UPDATE coupon SET issued_quantity = issued_quantity + 1 WHERE id = $1`, couponID); err != nil {
		return e, err
	}
	if err := tx.Commit(ctx); err != nil {
		return e, err
	}
	return refWalletEntry{ID: id.String(), CouponCode: code, UserID: user.String(), DiscountAmount: discount, IssuedAt: issuedAt.UTC()}, nil
}

func (s *refServer) list(c *gin.Context) {
	rows, err := s.pool.Query(c.Request.Context(), `SELECT code, name, discount_amount, total_quantity, issued_quantity FROM coupon ORDER BY code`)
	if err != nil {
		refError(c, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return
	}
	defer rows.Close()
	type coupon struct {
		Code           string `json:"code"`
		Name           string `json:"name"`
		DiscountAmount int64  `json:"discountAmount"`
		TotalQuantity  int    `json:"totalQuantity"`
		IssuedQuantity int    `json:"issuedQuantity"`
		Remaining      int    `json:"remaining"`
	}
	out := []coupon{}
	for rows.Next() {
		var k coupon
		if err := rows.Scan(&k.Code, &k.Name, &k.DiscountAmount, &k.TotalQuantity, &k.IssuedQuantity); err != nil {
			refError(c, http.StatusInternalServerError, "INTERNAL", err.Error())
			return
		}
		k.Remaining = k.TotalQuantity - k.IssuedQuantity
		out = append(out, k)
	}
	c.JSON(http.StatusOK, out)
}
