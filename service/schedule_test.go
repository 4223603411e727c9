package service

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"couponsvc/engine"
	"couponsvc/internal/testenv"

	dto "github.com/prometheus/client_model/go"
)

func TestOccurrence(t *testing.T) {
	zone := func(name string) *time.Location {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name, zone, day string
		minute          int
		opens, closes   string // RFC 3339; empty: the day has no coupon
	}{
		{"no DST", "Asia/Seoul", "2026-11-22", 13 * 60, "2026-11-22T04:00:00Z", "2026-11-23T04:00:00Z"},
		{"day before spring forward: 23 h", "America/New_York", "2026-03-07", 13 * 60, "2026-03-07T18:00:00Z", "2026-03-08T17:00:00Z"},
		{"spring forward day", "America/New_York", "2026-03-08", 13 * 60, "2026-03-08T17:00:00Z", "2026-03-09T17:00:00Z"},
		{"day before fall back: 25 h", "America/New_York", "2026-10-31", 13 * 60, "2026-10-31T17:00:00Z", "2026-11-01T18:00:00Z"},
		{"open time in the spring gap", "America/New_York", "2026-03-08", 2*60 + 30, "2026-03-08T06:30:00Z", "2026-03-09T06:30:00Z"},
		{"day before the skipped day runs to the next existing one", "Pacific/Apia", "2011-12-29", 13 * 60, "2011-12-29T23:00:00Z", "2011-12-30T23:00:00Z"},
		{"skipped day", "Pacific/Apia", "2011-12-30", 13 * 60, "", ""},
		{"day after the skipped day", "Pacific/Apia", "2011-12-31", 13 * 60, "2011-12-30T23:00:00Z", "2011-12-31T23:00:00Z"},
	} {
		day, _ := time.Parse(time.DateOnly, tc.day)
		opens, closes, ok := occurrence(day, tc.minute, zone(tc.zone))
		if tc.opens == "" {
			if ok {
				t.Errorf("%s: %s has a coupon opening %v", tc.name, tc.day, opens)
			}
			continue
		}
		if !ok || !opens.Equal(utc(tc.opens)) || !closes.Equal(utc(tc.closes)) {
			t.Errorf("%s: %v..%v (%v), want %s..%s", tc.name, opens.UTC(), closes.UTC(), ok, tc.opens, tc.closes)
		}
	}
}

// Three instances materialise one schedule concurrently, tick after tick, across a DST change,
// across a date their zone skipped, and across a day when none ran: one coupon per day, each
// created at least an hour before it opens (when an instance ran then), none after its window.
func TestSchedulesMaterialiseOncePerDay(t *testing.T) {
	for _, tc := range []struct {
		name, zone string
		from, to   string // local times the instances run
		downFrom   string // none runs from here (local) until to; empty: they run throughout
		want       []string
	}{
		{"DST change", "America/New_York", "2026-03-06T00:00", "2026-03-10T00:00", "",
			[]string{"20260306", "20260307", "20260308", "20260309"}},
		{"skipped date", "Pacific/Apia", "2011-12-28T00:00", "2012-01-01T00:00", "",
			[]string{"20111228", "20111229", "20111231"}},
		{"down for a day", "America/New_York", "2026-03-06T10:00", "2026-03-08T14:00", "2026-03-06T10:01",
			[]string{"20260308"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStack(t)
			loc, _ := time.LoadLocation(tc.zone)
			local := func(s string) time.Time {
				v, err := time.ParseInLocation("2006-01-02T15:04", s, loc)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			c := testenv.NewClock(local(tc.from))
			// A schedule every hour keeps Run's own ticks out of the way of the simulated ones.
			cfg := Config{ScheduleEvery: time.Hour, Engine: engine.Config{MetaRefresh: time.Hour}}
			pods := []*Service{st.service(t, c, false, cfg), st.service(t, c, false, cfg), st.service(t, c, false, cfg)}
			ctx := context.Background()
			_, err := pods[0].CreateSchedule(ctx, domain.Schedule{CodePrefix: "DROP", Name: "Daily drop", OpenMinute: 13 * 60,
				TimeZone: tc.zone, QuantityPerDay: 100, DiscountAmount: 3000, ValidDays: 30, MinOrderAmount: 10000})
			if err != nil {
				t.Fatal(err)
			}
			repo := st.repo(t)
			firstSeen := map[string]time.Time{}
			end := local(tc.to)
			for now := local(tc.from); !now.After(end); now = now.Add(20 * time.Minute) {
				if tc.downFrom != "" && now.After(local(tc.downFrom)) && now.Before(end) {
					continue
				}
				c.Set(now)
				var wg sync.WaitGroup
				for _, p := range pods {
					wg.Go(func() { p.MaterialiseSchedules(ctx) })
				}
				testenv.Wait(t, &wg, 30*time.Second, fmt.Sprintf("three instances materialise the schedules at %v", now))
				cs, err := repo.ListCoupons(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, cp := range cs {
					if _, ok := firstSeen[cp.Code]; !ok {
						firstSeen[cp.Code] = now
						if tc.downFrom == "" && cp.OpensAt.Sub(now) < time.Hour {
							t.Errorf("%s created at %v, only %v before it opens", cp.Code, now, cp.OpensAt.Sub(now))
						}
						if !now.Before(*cp.ClosesAt) {
							t.Errorf("%s created at %v, after its window closed at %v", cp.Code, now, cp.ClosesAt)
						}
					}
				}
			}
			cs, err := repo.ListCoupons(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) != len(tc.want) {
				t.Fatalf("%d coupons, want %d: %+v", len(cs), len(tc.want), cs)
			}
			var created float64
			for _, p := range pods {
				var m dto.Metric
				if err := p.metrics.CouponsMaterialised.Write(&m); err != nil {
					t.Fatal(err)
				}
				created += m.GetCounter().GetValue()
			}
			if int(created) != len(tc.want) {
				t.Errorf("instances report %v creations for %d coupons", created, len(tc.want))
			}
			for i, cp := range cs {
				day, _ := time.ParseInLocation("20060102", tc.want[i], time.UTC)
				opens, closes, _ := occurrence(day, 13*60, loc)
				if cp.Code != "DROP-"+tc.want[i] || !cp.OpensAt.Equal(opens) || !cp.ClosesAt.Equal(closes) ||
					cp.TotalQuantity != 100 || cp.DiscountAmount != 3000 || cp.ValidDays != 30 || cp.MinOrderAmount != 10000 {
					t.Errorf("coupon %d: %+v, want DROP-%s open %v..%v", i, cp, tc.want[i], opens, closes)
				}
				if cp.OpensAt.In(loc).Hour() != 13 {
					t.Errorf("%s opens at %v local", cp.Code, cp.OpensAt.In(loc))
				}
				if i > 0 && tc.downFrom == "" && !cs[i-1].ClosesAt.Equal(cp.OpensAt) {
					t.Errorf("%s closes %v but %s opens %v", cs[i-1].Code, cs[i-1].ClosesAt, cp.Code, cp.OpensAt)
				}
			}
		})
	}
}
