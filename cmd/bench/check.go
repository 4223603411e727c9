package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

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

// fcfs is the FCFS precision of one coupon.
type fcfs struct {
	code      string
	precision float64 // |winners ∩ early| / |winners|
	winners   int
	early     int
}

// fcfsPrecision computes, for every coupon whose distinct users outnumber its stock: order its
// requests by send time; the early set is the first `stock` distinct users by their first send;
// precision is the share of the winners (201s) that are in the early set.
func fcfsPrecision(wl *workload, load loadResult) []fcfs {
	type sent struct {
		at   int64
		user uuid.UUID
	}
	byCode := map[string][]sent{}
	winners := map[string]map[uuid.UUID]bool{}
	for i, s := range load.samples {
		if !s.sent {
			continue
		}
		r := wl.reqs[i]
		byCode[r.code] = append(byCode[r.code], sent{s.sendNs, r.user})
		if s.status == 201 {
			if winners[r.code] == nil {
				winners[r.code] = map[uuid.UUID]bool{}
			}
			winners[r.code][r.user] = true
		}
	}
	codes := make([]string, 0, len(byCode))
	for c := range byCode {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var out []fcfs
	for _, code := range codes {
		list := byCode[code]
		stock := wl.stock[code]
		sort.SliceStable(list, func(i, j int) bool { return list[i].at < list[j].at })
		early := map[uuid.UUID]bool{}
		for _, s := range list {
			if len(early) == stock {
				break
			}
			early[s.user] = true
		}
		distinct := map[uuid.UUID]bool{}
		for _, s := range list {
			distinct[s.user] = true
		}
		if len(distinct) <= stock { // no competition: every asker can win
			continue
		}
		w := winners[code]
		f := fcfs{code: code, winners: len(w), early: len(early)}
		if len(w) > 0 {
			var in int
			for u := range w {
				if early[u] {
					in++
				}
			}
			f.precision = float64(in) / float64(len(w))
		}
		out = append(out, f)
	}
	return out
}
