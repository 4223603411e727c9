// Package repository is couponsvc's PostgreSQL layer: embedded migrations, coupon and wallet
// queries, and the issue transaction. Driver errors are translated here into the sentinel
// errors below; nothing above this package imports pgx.
package repository

import (
	"couponsvc/domain"
	"io"
	"net"

	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// ErrStaleFence means the write came from a lock grant older than one PostgreSQL has already
// accepted for this coupon: the caller's lock was lost. The other errors the repository returns
// are the domain's (domain.ErrCouponNotFound, domain.ErrUnavailable, ...).
var ErrStaleFence = errors.New("stale lock fencing token")

// Open makes the pgx pool the repository expects. Its size defaults to 32 connections (pgx's
// own default, 4 on a 2-core machine, starves the read endpoints during a crowd); a
// pool_max_conns in the DSN wins.
func Open(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database DSN: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = 32
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	// When a query's context ends, ask the server to cancel it and wait for its answer (the
	// query's result, or its cancellation) rather than drop the connection at once: pgx's
	// default returns at once and cancels asynchronously, so an issue statement could commit
	// after the caller was told it had failed, and its re-read (ResolveBatch) ran
	// before the commit. Only a server that does not answer within cancelGrace leaves the
	// outcome unknown.
	cfg.ConnConfig.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: cancelGrace}
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		// google/uuid values as PostgreSQL uuids in binary: without it pgx goes through
		// their string form and a failed plan per value, which dominated a batch's cost.
		pgxuuid.Register(conn.TypeMap())
		// A transaction whose instance died (SIGKILL, node loss) while it waited on a row lock
		// must not commit later for nobody: PostgreSQL 14+ checks every second that the client
		// is still there and aborts the query otherwise. Older servers skip the setting.
		_, err := conn.Exec(ctx, `SELECT set_config('client_connection_check_interval', '1000', false)
			WHERE current_setting('server_version_num')::int >= 140000`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return pool, nil
}

// cancelGrace is how long a cancelled query waits for the server to answer its cancellation.
const cancelGrace = 2 * time.Second

// Repository runs queries on a pgx pool.
type Repository struct {
	pool *pgxpool.Pool
}

// New returns a Repository over pool.
func New(pool *pgxpool.Pool) *Repository { return &Repository{pool: pool} }

// MaxConns is the size of the connection pool.
func (r *Repository) MaxConns() int { return int(r.pool.Config().MaxConns) }

// Ping checks that PostgreSQL answers.
func (r *Repository) Ping(ctx context.Context) error {
	if err := r.pool.Ping(ctx); err != nil {
		return translate("ping", err)
	}
	return nil
}

const couponColumns = `id, code, name, discount_amount, total_quantity, issued_quantity, fence_token,
	opens_at, closes_at, valid_days, min_order_amount, paused`

func scanCoupon(row pgx.Row) (domain.Coupon, error) {
	var c domain.Coupon
	err := row.Scan(&c.ID, &c.Code, &c.Name, &c.DiscountAmount, &c.TotalQuantity, &c.IssuedQuantity, &c.FenceToken,
		&c.OpensAt, &c.ClosesAt, &c.ValidDays, &c.MinOrderAmount, &c.Paused)
	return c, err
}

// CouponByCode returns the coupon with that code, or domain.ErrCouponNotFound.
func (r *Repository) CouponByCode(ctx context.Context, code string) (domain.Coupon, error) {
	c, err := scanCoupon(r.pool.QueryRow(ctx, `SELECT `+couponColumns+` FROM coupon WHERE code = $1`, code))
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Coupon{}, fmt.Errorf("coupon %q: %w", code, domain.ErrCouponNotFound)
	}
	if err != nil {
		return domain.Coupon{}, translate("get coupon "+code, err)
	}
	return c, nil
}

// ListCoupons returns every coupon, ordered by code.
func (r *Repository) ListCoupons(ctx context.Context) ([]domain.Coupon, error) {
	return collect(ctx, r, "list coupons", `SELECT `+couponColumns+` FROM coupon ORDER BY code`, couponRow)
}

// CreateCoupon inserts a coupon with nothing issued yet and returns it as stored. A zero OpensAt
// opens it now, a zero ValidDays is the default (30). A taken code is domain.ErrCouponExists.
// With an actor in ctx (an admin request), the audit row is written in the same transaction.
func (r *Repository) CreateCoupon(ctx context.Context, c domain.Coupon) (domain.Coupon, error) {
	if c.ID == uuid.Nil {
		c.ID = uuid.Must(uuid.NewV7())
	}
	var opensAt *time.Time
	if !c.OpensAt.IsZero() {
		opensAt = &c.OpensAt
	}
	var out domain.Coupon
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var err error
		out, err = scanCoupon(tx.QueryRow(ctx, `INSERT INTO coupon (id, code, name, discount_amount, total_quantity,
				opens_at, closes_at, valid_days, min_order_amount, paused)
			VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, coalesce(nullif($8, 0), 30), $9, $10)
			RETURNING `+couponColumns,
			c.ID, c.Code, c.Name, c.DiscountAmount, c.TotalQuantity, opensAt, c.ClosesAt, c.ValidDays, c.MinOrderAmount, c.Paused))
		if err != nil {
			return err
		}
		return audit(ctx, tx, domain.ActionCreateCoupon, c.Code, nil, "coupon", c.ID)
	})
	if isUniqueViolation(err) {
		return domain.Coupon{}, fmt.Errorf("create coupon %s: %w", c.Code, domain.ErrCouponExists)
	}
	if err != nil {
		return domain.Coupon{}, translate("create coupon "+c.Code, err)
	}
	return out, nil
}

// HasIssued reports whether userID holds coupon couponID.
func (r *Repository) HasIssued(ctx context.Context, couponID, userID uuid.UUID) (bool, error) {
	var held bool
	err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM coupon_wallet WHERE coupon_id = $1 AND user_id = $2)`,
		couponID, userID).Scan(&held)
	if err != nil {
		return false, translate("has issued", err)
	}
	return held, nil
}

// HoldersOf lists the users holding coupon couponID.
func (r *Repository) HoldersOf(ctx context.Context, couponID uuid.UUID) ([]uuid.UUID, error) {
	return collect(ctx, r, "holders", `SELECT user_id FROM coupon_wallet WHERE coupon_id = $1`, pgx.RowTo[uuid.UUID], couponID)
}

// UserWallet lists the user's wallet entries, oldest first.
func (r *Repository) UserWallet(ctx context.Context, userID uuid.UUID) ([]domain.WalletEntry, error) {
	return collect(ctx, r, "user wallet", `SELECT w.id, w.coupon_id, c.code, w.user_id, c.discount_amount, w.issued_at,
			w.expires_at, w.redeemed_at, w.order_id
		FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id
		WHERE w.user_id = $1 ORDER BY w.issued_at, w.id`,
		func(row pgx.CollectableRow) (domain.WalletEntry, error) {
			var e domain.WalletEntry
			err := row.Scan(&e.ID, &e.CouponID, &e.CouponCode, &e.UserID, &e.DiscountAmount, &e.IssuedAt,
				&e.ExpiresAt, &e.RedeemedAt, &e.OrderID)
			return e, err
		}, userID)
}

// collect runs a query and scans every row with scan; errors carry op.
func collect[T any](ctx context.Context, r *Repository, op, sql string, scan pgx.RowToFunc[T], args ...any) ([]T, error) {
	rows, err := r.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, translate(op, err)
	}
	out, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, translate(op, err)
	}
	return out, nil
}

func couponRow(row pgx.CollectableRow) (domain.Coupon, error) { return scanCoupon(row) }

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation
}

// translate wraps err with the operation. PostgreSQL out of reach becomes
// domain.ErrUnavailable: a connection that could not be made or broke (dial, I/O, a closed
// pool, a deadline), and the server's errors for going away, starting up or refusing
// connections. A cancelled context (the caller gave up) stays what it is, and so does any
// other error (an SQL error, a scan that does not fit: a bug, answered 500, not "retry").
func translate(op string, err error) error {
	if unreachable(err) {
		return fmt.Errorf("%s: %w: %w", op, domain.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unreachable reports whether err says PostgreSQL could not be reached or went away.
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgerrcode.IsConnectionException(pgErr.Code) ||
			pgErr.Code == pgerrcode.AdminShutdown || pgErr.Code == pgerrcode.CrashShutdown ||
			pgErr.Code == pgerrcode.CannotConnectNow || pgErr.Code == pgerrcode.TooManyConnections
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &connErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, puddle.ErrClosedPool)
}
