package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"couponsvc/internal/testenv"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// The database roles as k8s/ makes them: k8s/base/postgres-init/10-roles.sh (what PostgreSQL's
// image runs on an empty volume) run against a real server; `couponsvc migrate` as the
// migration role; `couponsvc serve` as the runtime role with MIGRATE_ON_START=false. The
// runtime role issues coupons and makes audited admin changes, but can change no schema.
func TestDatabaseRoles(t *testing.T) {
	pg := testenv.NewPostgres(t)
	superDSN := pg.CreateDatabase(t)
	u, err := url.Parse(superDSN)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	const migrator, runtime = "coupon_migrator", "coupon_runtime"
	roleDSN := func(role string) string {
		return fmt.Sprintf("postgres://%s:%s-password@127.0.0.1:%d/%s?sslmode=disable", role, role, pg.Port, dbName)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "k8s/base/postgres-init/10-roles.sh")
	cmd.Env = append(os.Environ(), "PATH="+pg.BinDir()+":/usr/bin:/bin", "PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", pg.Port),
		"POSTGRES_USER=postgres", "POSTGRES_DB="+dbName,
		"COUPON_MIGRATOR_USER="+migrator, "COUPON_MIGRATOR_PASSWORD="+migrator+"-password",
		"COUPON_RUNTIME_USER="+runtime, "COUPON_RUNTIME_PASSWORD="+runtime+"-password")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("10-roles.sh: %v\n%s", err, out)
	}

	redis := testenv.NewRedisNodes(t, 1)
	env := func(dsn string, extra map[string]string) map[string]string {
		e := map[string]string{"DATABASE_URL": dsn, "REDIS_ADDRS": strings.Join(testenv.Addrs(redis), ","), "LOG_LEVEL": "warn"}
		for k, v := range extra {
			e[k] = v
		}
		return e
	}
	runCmd := func(args []string, e map[string]string) error {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return run(rctx, args, func(k string) string { return e[k] }, io.Discard, io.Discard)
	}
	// The runtime role cannot migrate: serve with the default MIGRATE_ON_START=true says so.
	err = runCmd([]string{"serve"}, env(roleDSN(runtime), map[string]string{"HTTP_ADDR": "127.0.0.1:0"}))
	if err == nil || !strings.Contains(err.Error(), "MIGRATE_ON_START=false") {
		t.Fatalf("serve as the runtime role with MIGRATE_ON_START=true: %v, want a refusal naming MIGRATE_ON_START=false", err)
	}
	if err := runCmd([]string{"migrate"}, env(roleDSN(migrator), nil)); err != nil {
		t.Fatalf("migrate as the migration role: %v", err)
	}

	in := startInstance(t, env(roleDSN(runtime), map[string]string{"MIGRATE_ON_START": "false", "ADMIN_TOKEN": adminToken}))
	mustStatus(t, "issue as the runtime role", in.issue(t, "A0001", uuid.New()), 201, "")
	mustStatus(t, "audited admin change as the runtime role",
		in.admin(t, "POST", "/coupons", `{"code":"ROLE1","name":"roles","discountAmount":1,"totalQuantity":1}`), 201, "")
	mustStatus(t, "issue the new coupon", in.issue(t, "ROLE1", uuid.New()), 201, "")
	checkInvariants(t, superDSN, "ROLE1", 1, nil)

	conn := db(t, roleDSN(runtime))
	var super bool
	var notMigrators int
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Errorf("the runtime role is a superuser (%v, %v)", super, err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> $1`, migrator).Scan(&notMigrators); err != nil || notMigrators != 0 {
		t.Errorf("%d tables not owned by the migration role (%v)", notMigrators, err)
	}
	for _, stmt := range []string{
		`DROP TABLE coupon_wallet`,
		`ALTER TABLE coupon ADD COLUMN sneaky int`,
		`ALTER TABLE coupon DROP CONSTRAINT coupon_issued_within_total`,
		`CREATE TABLE sneaky (id int)`,
		`TRUNCATE coupon_wallet`,
		`DELETE FROM coupon_wallet`,
		`DELETE FROM admin_audit`,
		`CREATE ROLE sneaky`,
		`CREATE DATABASE sneaky`,
	} {
		_, err := conn.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
			t.Errorf("as the runtime role, %s: %v; want permission denied (42501)", stmt, err)
		}
	}
	// The migration role may change the schema, but is no superuser either.
	mconn := db(t, roleDSN(migrator))
	if err := mconn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Errorf("the migration role is a superuser (%v, %v)", super, err)
	}
}
