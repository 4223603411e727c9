package repository

import (
	"couponsvc/domain"

	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the pg_advisory_lock key that serialises migrations: several pods
// starting at once apply each migration exactly once, the others wait and then find it done.
const migrationLockKey = 0x636f75706f6e // "coupon"

// migrations lists the embedded migrations, in the order they apply.
func migrations() ([]string, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

func versionOf(name string) string {
	return strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql")
}

// PendingMigrations lists the embedded migrations the database lacks (all of them when it has
// none): what serve checks when it does not migrate itself (MIGRATE_ON_START=false), with a
// role that may only read schema_migrations.
func (r *Repository) PendingMigrations(ctx context.Context) ([]string, error) {
	names, err := migrations()
	if err != nil {
		return nil, err
	}
	applied := map[string]bool{}
	rows, err := r.pool.Query(ctx, `SELECT version FROM schema_migrations`)
	if err == nil {
		var versions []string
		versions, err = pgx.CollectRows(rows, pgx.RowTo[string])
		for _, v := range versions {
			applied[v] = true
		}
	}
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable) {
		return nil, translate("pending migrations", err)
	}
	var pending []string
	for _, name := range names {
		if v := versionOf(name); !applied[v] {
			pending = append(pending, v)
		}
	}
	return pending, nil
}

// Migrate applies the embedded migrations not applied yet, each in its own transaction,
// under a session advisory lock. It is idempotent.
func (r *Repository) Migrate(ctx context.Context) error {
	names, err := migrations()
	if err != nil {
		return err
	}

	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return translate("migrate: acquire connection", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return translate("migrate: advisory lock", err)
	}
	// Unlock on a fresh context: a cancelled ctx must not leave the lock held on a pooled
	// connection.
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, migrationLockKey) //nolint:errcheck

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return translate("migrate: create schema_migrations", noPrivilegeHint(err))
	}
	for _, name := range names {
		version := versionOf(name)
		sql, err := migrationFiles.ReadFile(name)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", version, err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, version).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, version)
			return err
		})
		if err != nil {
			return translate("migrate "+version, noPrivilegeHint(err))
		}
	}
	return nil
}

// noPrivilegeHint says what to do when the role may not change the schema: a runtime role
// serving with the default MIGRATE_ON_START=true.
func noPrivilegeHint(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.InsufficientPrivilege {
		return fmt.Errorf("%w (this database role may not change the schema: run `couponsvc migrate` with the migration role, and serve with MIGRATE_ON_START=false)", err)
	}
	return err
}

// DemoCoupons are the three tiers seeded by default (the API's table).
var DemoCoupons = []domain.Coupon{
	{Code: "A0001", Name: "Coupon A", DiscountAmount: 10000, TotalQuantity: 300},
	{Code: "B0001", Name: "Coupon B", DiscountAmount: 5000, TotalQuantity: 2000},
	{Code: "C0001", Name: "Coupon C", DiscountAmount: 1000, TotalQuantity: 10000},
}

// SeedDemo creates the demo tiers that do not exist yet; existing ones are left as they are.
func (r *Repository) SeedDemo(ctx context.Context) error {
	for _, c := range DemoCoupons {
		_, err := r.pool.Exec(ctx, `INSERT INTO coupon (id, code, name, discount_amount, total_quantity)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO NOTHING`,
			uuid.Must(uuid.NewV7()), c.Code, c.Name, c.DiscountAmount, c.TotalQuantity)
		if err != nil {
			return translate("seed "+c.Code, err)
		}
	}
	return nil
}
