package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// invariants is the outcome of the checks in PostgreSQL after a workload.
type invariants struct {
	ok       bool
	problems []string
}

// checkInvariants checks, for every coupon: issued_quantity = count(wallet rows) <= total; no
// duplicate (coupon, user); every 201 has its row (same id, coupon and user); no row lacks a 201.
func checkInvariants(ctx context.Context, dsn string, load loadResult, reqs []issueReq) invariants {
	var inv invariants
	bad := func(format string, args ...any) { inv.problems = append(inv.problems, fmt.Sprintf(format, args...)) }
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return invariants{problems: []string{"connect: " + err.Error()}}
	}
	defer conn.Close(ctx)

	rows, err := conn.Query(ctx, `SELECT c.code, c.total_quantity, c.issued_quantity,
		(SELECT count(*) FROM coupon_wallet w WHERE w.coupon_id = c.id) FROM coupon c ORDER BY c.code`)
	if err != nil {
		return invariants{problems: []string{"query coupons: " + err.Error()}}
	}
	for rows.Next() {
		var code string
		var total, issued int
		var count int64
		if err := rows.Scan(&code, &total, &issued, &count); err != nil {
			bad("scan coupon: %v", err)
			break
		}
		if int64(issued) != count {
			bad("%s: issued_quantity %d but %d wallet rows", code, issued, count)
		}
		if issued > total {
			bad("%s: issued_quantity %d > total %d", code, issued, total)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		bad("coupons: %v", err)
	}

	var dups int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM coupon_wallet
		GROUP BY coupon_id, user_id HAVING count(*) > 1) d`).Scan(&dups); err != nil {
		bad("duplicates: %v", err)
	} else if dups > 0 {
		bad("%d (coupon, user) pairs have more than one wallet row", dups)
	}

	type walletRow struct {
		code string
		user uuid.UUID
	}
	wallet := map[string]walletRow{}
	wrows, err := conn.Query(ctx, `SELECT w.id::text, c.code, w.user_id FROM coupon_wallet w JOIN coupon c ON c.id = w.coupon_id`)
	if err != nil {
		return invariants{problems: append(inv.problems, "query wallet: "+err.Error())}
	}
	for wrows.Next() {
		var id, code string
		var user uuid.UUID
		if err := wrows.Scan(&id, &code, &user); err != nil {
			bad("scan wallet: %v", err)
			break
		}
		wallet[id] = walletRow{code, user}
	}
	wrows.Close()
	if err := wrows.Err(); err != nil {
		bad("wallet: %v", err)
	}

	granted := map[string]bool{}         // wallet ids answered with 201
	grantedPair := map[issueReq]string{} // (coupon, user) -> wallet id of its 201
	var missing, mismatched, twice, noID, trans int
	for i, s := range load.samples {
		if s.sent && s.status == 0 {
			trans++
		}
		if s.status != 201 {
			continue
		}
		r := reqs[i]
		if s.walletID == "" {
			noID++
			continue
		}
		if prev, ok := grantedPair[r]; ok && prev != s.walletID {
			twice++
		}
		grantedPair[r] = s.walletID
		granted[s.walletID] = true
		row, ok := wallet[s.walletID]
		switch {
		case !ok:
			missing++
		case row.code != r.code || row.user != r.user:
			mismatched++
		}
	}
	if missing > 0 {
		bad("%d answers 201 have no wallet row with the returned id", missing)
	}
	if mismatched > 0 {
		bad("%d answers 201 name a wallet row of another coupon or user", mismatched)
	}
	if twice > 0 {
		bad("%d (coupon, user) pairs got two 201s with different wallet ids", twice)
	}
	if noID > 0 {
		bad("%d answers 201 without a wallet id in the body", noID)
	}
	var orphans int
	for id := range wallet {
		if !granted[id] {
			orphans++
		}
	}
	if orphans > 0 {
		msg := fmt.Sprintf("%d wallet rows were never answered 201", orphans)
		if trans > 0 {
			msg += fmt.Sprintf(" (%d requests ended in a transport error: their outcome is unknown)", trans)
		}
		bad("%s", msg)
	}
	inv.ok = len(inv.problems) == 0
	return inv
}

func (inv invariants) String() string {
	if inv.ok {
		return "OK"
	}
	return "FAIL: " + strings.Join(inv.problems, "; ")
}

// fcfs is the first-come-first-served outcome of one coupon with more distinct askers than
// stock.
type fcfs struct {
	code      string
	precision float64 // |winners ∩ early| / |winners|
	winners   int
	early     int // the first `stock` distinct askers by their first send
	earlyWon  int // |winners ∩ early|
	// late: the latest first send of a winner minus the boundary (the first send of the
	// stock-th distinct asker); ≤ 0 when every winner was among the first `stock`.
	late time.Duration
}

// fcfsPrecision computes, for every coupon whose distinct askers outnumber its stock (askers:
// the users with a request sent at or after wl.eligibleNs): order the askers by their first
// send; the early set is the first `stock` of them and the boundary is the stock-th one's first
// send; precision is the share of the winners (201s, whenever sent) that are in the early set,
// and late is how long after the boundary the latest winner first sent.
func fcfsPrecision(wl *workload, load loadResult) []fcfs {
	firstAny := map[issueReq]int64{}           // (coupon, user) -> first send, any time
	first := map[string]map[uuid.UUID]int64{}  // coupon -> asker -> first send at or after eligibleNs
	winners := map[string]map[uuid.UUID]bool{} // coupon -> users answered 201
	for i, s := range load.samples {
		if !s.sent {
			continue
		}
		r := wl.reqs[i]
		if at, ok := firstAny[r]; !ok || s.sendNs < at {
			firstAny[r] = s.sendNs
		}
		if s.status == 201 {
			if winners[r.code] == nil {
				winners[r.code] = map[uuid.UUID]bool{}
			}
			winners[r.code][r.user] = true
		}
		if s.sendNs < wl.eligibleNs {
			continue
		}
		if first[r.code] == nil {
			first[r.code] = map[uuid.UUID]int64{}
		}
		if at, ok := first[r.code][r.user]; !ok || s.sendNs < at {
			first[r.code][r.user] = s.sendNs
		}
	}
	codes := make([]string, 0, len(first))
	for c := range first {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var out []fcfs
	for _, code := range codes {
		stock := wl.stock[code]
		if len(first[code]) <= stock { // no competition: every asker can win
			continue
		}
		type asker struct {
			user uuid.UUID
			at   int64
		}
		askers := make([]asker, 0, len(first[code]))
		for u, at := range first[code] {
			askers = append(askers, asker{u, at})
		}
		sort.Slice(askers, func(i, j int) bool { return askers[i].at < askers[j].at })
		early := map[uuid.UUID]bool{}
		for _, a := range askers[:stock] {
			early[a.user] = true
		}
		var boundary int64
		if stock > 0 {
			boundary = askers[stock-1].at
		}
		w := winners[code]
		f := fcfs{code: code, winners: len(w), early: len(early)}
		var latest int64 = math.MinInt64
		for u := range w { // a winner's first send, whenever it was (W6: before the opening too)
			if early[u] {
				f.earlyWon++
			}
			latest = max(latest, firstAny[issueReq{code, u}])
		}
		if len(w) > 0 {
			f.precision = float64(f.earlyWon) / float64(len(w))
			f.late = time.Duration(latest - boundary)
		}
		out = append(out, f)
	}
	return out
}

// openingFacts reads, in PostgreSQL, how many wallet rows of coupon code were issued before its
// opensAt (must be 0) and how long after opensAt the last one was issued (PostgreSQL's clock).
func openingFacts(ctx context.Context, dsn, code string) (before int, last time.Duration, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	var lastUs float64
	err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE w.issued_at < c.opens_at),
		coalesce(extract(epoch FROM max(w.issued_at) - c.opens_at) * 1e6, 0)
		FROM coupon c LEFT JOIN coupon_wallet w ON w.coupon_id = c.id WHERE c.code = $1 GROUP BY c.opens_at`, code).Scan(&before, &lastUs)
	return before, time.Duration(lastUs * float64(time.Microsecond)), err
}
