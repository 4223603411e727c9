package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// physRef is one physical reference figure.
type physRef struct {
	name  string
	value string // the figure, or why there is none
}

const (
	pgbenchClients  = 16
	pgbenchSeconds  = 5
	pgbenchRows     = 10000
	redisBenchCount = 100000
)

// One issue, the way any one-commit-per-issue design does it: move a coupon's counter and
// insert a wallet row, in one transaction.
const pgbenchHot = `BEGIN;
UPDATE ref_coupon SET issued_quantity = issued_quantity + 1 WHERE id = 1;
INSERT INTO ref_wallet (id, coupon_id, user_id) VALUES (gen_random_uuid(), 1, gen_random_uuid());
END;
`

const pgbenchSpread = `\set cid random(1, 10000)
BEGIN;
UPDATE ref_coupon SET issued_quantity = issued_quantity + 1 WHERE id = :cid;
INSERT INTO ref_wallet (id, coupon_id, user_id) VALUES (gen_random_uuid(), :cid, gen_random_uuid());
END;
`

var (
	tpsRe   = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	redisRe = regexp.MustCompile(`(SET|GET): ([0-9.]+) requests per second`)
)

// runReferences measures what the machine itself can do: pgbench on one hot row and on spread
// rows (16 clients, 5 s each), and redis-benchmark SET/GET on one node.
func runReferences(ctx context.Context, o options, e *env) []physRef {
	var refs []physRef
	o.logf("physical references: pgbench (hot row, spread rows), redis-benchmark")
	hot, spread := pgbenchRefs(ctx, e)
	refs = append(refs,
		physRef{fmt.Sprintf("PostgreSQL one-row UPDATE+INSERT transactions, single hot row, %d clients, %d s (pgbench)", pgbenchClients, pgbenchSeconds), hot},
		physRef{fmt.Sprintf("PostgreSQL one-row UPDATE+INSERT transactions, %s spread rows (random id), %d clients, %d s (pgbench)", thousands(pgbenchRows), pgbenchClients, pgbenchSeconds), spread},
	)
	refs = append(refs, redisBenchRefs(ctx, e)...)
	return refs
}

func pgbenchRefs(ctx context.Context, e *env) (hot, spread string) {
	bin := filepath.Join(e.pg.BinDir(), "pgbench")
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("pgbench")
		if lerr != nil {
			msg := "not measured: pgbench not found"
			return msg, msg
		}
		bin = p
	}
	dsn, err := e.pg.NewDatabase()
	if err != nil {
		msg := "not measured: " + err.Error()
		return msg, msg
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		msg := "not measured: " + err.Error()
		return msg, msg
	}
	_, err = conn.Exec(ctx, fmt.Sprintf(`
		CREATE TABLE ref_coupon (id int PRIMARY KEY, issued_quantity int NOT NULL DEFAULT 0);
		INSERT INTO ref_coupon (id) SELECT generate_series(1, %d);
		CREATE TABLE ref_wallet (id uuid PRIMARY KEY, coupon_id int NOT NULL REFERENCES ref_coupon (id),
			user_id uuid NOT NULL, issued_at timestamptz NOT NULL DEFAULT now(), UNIQUE (coupon_id, user_id))`, pgbenchRows))
	if err == nil {
		_, err = conn.Exec(ctx, `VACUUM ANALYZE ref_coupon`) // not inside the implicit transaction above
	}
	dbName := conn.Config().Database
	conn.Close(ctx)
	if err != nil {
		msg := "not measured: " + err.Error()
		return msg, msg
	}
	one := func(name, script string) string {
		path := filepath.Join(e.tmp, name+".sql")
		if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
			return "not measured: " + err.Error()
		}
		cctx, cancel := context.WithTimeout(ctx, time.Duration(pgbenchSeconds+30)*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin, "-n", "-h", "127.0.0.1", "-p", strconv.Itoa(e.pg.Port), "-U", "postgres",
			"-c", strconv.Itoa(pgbenchClients), "-j", "2", "-T", strconv.Itoa(pgbenchSeconds), "-M", "prepared",
			"-f", path, dbName)
		out, err := cmd.CombinedOutput()
		m := tpsRe.FindSubmatch(out)
		if m == nil {
			return fmt.Sprintf("not measured: pgbench %v: %s", err, lastLine(string(out)))
		}
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		return fmt.Sprintf("%s tps", thousands(int(tps+0.5)))
	}
	return one("hot", pgbenchHot), one("spread", pgbenchSpread)
}

func redisBenchRefs(ctx context.Context, e *env) []physRef {
	name := fmt.Sprintf("one Redis node, redis-benchmark -t set,get -n %s (50 clients)", thousands(redisBenchCount))
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return []physRef{{name, "not measured: redis-benchmark not found"}}
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, bin, "-h", "127.0.0.1", "-p", strconv.Itoa(e.redis[0].Port),
		"-t", "set,get", "-n", strconv.Itoa(redisBenchCount), "-q").CombinedOutput()
	got := map[string]float64{}
	for _, m := range redisRe.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		got[m[1]] = v
	}
	if len(got) == 0 {
		return []physRef{{name, fmt.Sprintf("not measured: %v: %s", err, lastLine(string(out)))}}
	}
	return []physRef{{name, fmt.Sprintf("SET %s ops/s, GET %s ops/s", thousands(int(got["SET"]+0.5)), thousands(int(got["GET"]+0.5)))}}
}

func lastLine(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\r", "\n"))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
