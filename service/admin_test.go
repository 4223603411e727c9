package service

import (
	"couponsvc/domain"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"couponsvc/engine"
	"couponsvc/internal/metrics"
	"couponsvc/internal/notify"
	"couponsvc/internal/testenv"
	"couponsvc/lock"
	"couponsvc/repository"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// clock is a business clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// stack is one PostgreSQL database and Redis node that several services share, as pods do.
type stack struct {
	dsn   string
	redis []string
}

func newStack(t *testing.T) stack {
	t.Helper()
	st := stack{dsn: testenv.Database(t), redis: testenv.Addrs(testenv.NewRedisNodes(t, 1))}
	if err := st.repo(t).Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func (st stack) repo(t *testing.T) *repository.Repository {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), st.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return repository.New(pool)
}

// service starts one instance; with bus, it hears the others' changes and facts. Its background work
// (Run) runs until the test ends.
func (st stack) service(t *testing.T, c *clock, bus bool, cfg Config) *Service {
	t.Helper()
	nodes := lock.NewNodes(st.redis, "")
	locks := lock.New(nodes)
	cfg.Engine.Now = c.Now
	if cfg.Engine.LockWait == 0 {
		cfg.Engine.LockWait = 3 * time.Second
	}
	if bus {
		cfg.Engine.Bus = notify.New(nodes, "test:coupon-changed", nil)
		cfg.Engine.Facts = notify.New(nodes, "test:coupon-facts", nil)
	}
	s := New(st.repo(t), engine.NewLocker(locks), cfg, metrics.New(), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		testenv.Receive(t, done, 10*time.Second, "the service's background work (Run) stops when its context ends")
		locks.Close()
	})
	return s
}

func mustCreate(t *testing.T, s *Service, c domain.Coupon) domain.Coupon {
	t.Helper()
	out, err := s.CreateCoupon(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The window is [opensAt, closesAt), to the millisecond, on the service's clock.
func TestIssueWindowEdges(t *testing.T) {
	st := newStack(t)
	opens := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	closes := opens.Add(time.Hour)
	c := &clock{t: opens.Add(-time.Hour)}
	s := st.service(t, c, false, Config{})
	mustCreate(t, s, domain.Coupon{Code: "EDGE", Name: "edge", DiscountAmount: 100, TotalQuantity: 100,
		OpensAt: opens, ClosesAt: &closes, ValidDays: 7})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"1 ms before opensAt", opens.Add(-time.Millisecond), domain.ErrEventNotOpen},
		{"at opensAt", opens, nil},
		{"1 ms after opensAt", opens.Add(time.Millisecond), nil},
		{"1 ms before closesAt", closes.Add(-time.Millisecond), nil},
		{"at closesAt", closes, domain.ErrEventClosed},
		{"1 ms after closesAt", closes.Add(time.Millisecond), domain.ErrEventClosed},
	} {
		c.Set(tc.at)
		e, err := s.Issue(ctx, "EDGE", uuid.New())
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if err == nil && !e.ExpiresAt.Equal(e.IssuedAt.Add(7*24*time.Hour)) {
			t.Errorf("%s: expiresAt %v for issuedAt %v and 7 valid days", tc.name, e.ExpiresAt, e.IssuedAt)
		}
	}
	// The window is checked at the request's arrival, not when it is handled: a request that
	// reached the host 2 ms before the opening and is handled 1 ms after it is not issued.
	c.Set(opens.Add(time.Millisecond))
	early := WithArrival(ctx, time.Now().Add(-2*time.Millisecond))
	if _, err := s.Issue(early, "EDGE", uuid.New()); !errors.Is(err, domain.ErrEventNotOpen) {
		t.Errorf("arrived 1 ms before opensAt, handled 1 ms after: %v, want %v", err, domain.ErrEventNotOpen)
	}

	c.Set(opens.Add(time.Minute))
	pause := func(p bool) {
		t.Helper()
		if _, err := s.UpdateCoupon(ctx, "EDGE", CouponPatch{Paused: &p}); err != nil {
			t.Fatal(err)
		}
	}
	pause(true)
	if _, err := s.Issue(ctx, "EDGE", uuid.New()); !errors.Is(err, domain.ErrEventClosed) {
		t.Errorf("paused: %v", err)
	}
	pause(false)
	user := uuid.New()
	e, err := s.Issue(ctx, "EDGE", user)
	if err != nil {
		t.Fatalf("resumed: %v", err)
	}
	// The 201's expiry is the one PostgreSQL stored.
	w, err := s.UserWallet(ctx, user, WalletAll)
	if err != nil || len(w) != 1 || !w[0].ExpiresAt.Equal(e.ExpiresAt) {
		t.Fatalf("stored wallet %+v (%v), issued %+v", w, err, e)
	}
}

// A change made through one instance reaches another through the bus within moments, long
// before its periodic refresh (an hour here): the window, a raised stock (the sold-out and
// final caches are dropped), a pause.
func TestChangesReachOtherInstances(t *testing.T) {
	st := newStack(t)
	now := time.Now()
	c := &clock{t: now}
	cfg := Config{Engine: engine.Config{MetaRefresh: time.Hour}}
	a, b := st.service(t, c, true, cfg), st.service(t, c, true, cfg)
	later := now.Add(time.Hour)
	mustCreate(t, a, domain.Coupon{Code: "SHARED", Name: "shared", DiscountAmount: 1, TotalQuantity: 1, OpensAt: later, ValidDays: 30})
	ctx := context.Background()
	u1, u2 := uuid.New(), uuid.New()
	if _, err := b.Issue(ctx, "SHARED", u1); !errors.Is(err, domain.ErrEventNotOpen) {
		t.Fatalf("before opening: %v", err)
	}
	update := func(p CouponPatch) {
		t.Helper()
		if _, err := a.UpdateCoupon(ctx, "SHARED", p); err != nil {
			t.Fatal(err)
		}
	}
	// eventually retries issue on b until it gives want, within 2 s.
	eventually := func(what string, user uuid.UUID, want error) {
		t.Helper()
		start := time.Now()
		for {
			_, err := b.Issue(ctx, "SHARED", user)
			if errors.Is(err, want) || (want == nil && err == nil) {
				t.Logf("%s: seen by the other instance after %v", what, time.Since(start))
				return
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("%s: the other instance still answers %v", what, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	earlier := now.Add(-time.Minute)
	update(CouponPatch{OpensAt: &earlier})
	eventually("window opened", u1, nil)
	for range 2 { // the second answer comes from b's final cache
		if _, err := b.Issue(ctx, "SHARED", u2); !errors.Is(err, domain.ErrSoldOut) {
			t.Fatalf("stock 1 issued: %v", err)
		}
	}
	two := 2
	update(CouponPatch{TotalQuantity: &two})
	eventually("stock raised", u2, nil)
	if _, err := b.Issue(ctx, "SHARED", uuid.New()); !errors.Is(err, domain.ErrSoldOut) {
		t.Fatalf("stock 2 issued: %v", err)
	}
	paused := true
	update(CouponPatch{Paused: &paused})
	eventually("paused", uuid.New(), domain.ErrEventClosed)
	one := 1
	if _, err := a.UpdateCoupon(ctx, "SHARED", CouponPatch{TotalQuantity: &one}); !errors.Is(err, domain.ErrStockBelowIssued) {
		t.Fatalf("stock below issued: %v", err)
	}
}

// Without any notice (no bus), an instance's copy is at most MetaRefresh old.
func TestStalenessBoundedWithoutBus(t *testing.T) {
	st := newStack(t)
	c := &clock{t: time.Now()}
	cfg := Config{Engine: engine.Config{MetaRefresh: 100 * time.Millisecond}}
	a, b := st.service(t, c, false, cfg), st.service(t, c, false, cfg)
	mustCreate(t, a, domain.Coupon{Code: "LONELY", Name: "lonely", DiscountAmount: 1, TotalQuantity: 10, ValidDays: 30})
	ctx := context.Background()
	if _, err := b.Issue(ctx, "LONELY", uuid.New()); err != nil {
		t.Fatal(err)
	}
	paused := true
	if _, err := a.UpdateCoupon(ctx, "LONELY", CouponPatch{Paused: &paused}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		_, err := b.Issue(ctx, "LONELY", uuid.New())
		if errors.Is(err, domain.ErrEventClosed) {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("still %v after 1 s with a 100 ms refresh", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("pause seen without a notice after %v", time.Since(start))
}

// Expiry is on the service's clock: usable until one millisecond before expiresAt.
func TestRedeemExpiryAndWalletStatus(t *testing.T) {
	st := newStack(t)
	c := &clock{t: time.Now()}
	s := st.service(t, c, false, Config{})
	mustCreate(t, s, domain.Coupon{Code: "DAY", Name: "one day", DiscountAmount: 3000, TotalQuantity: 10, ValidDays: 1,
		OpensAt: time.Now().Add(-time.Hour), MinOrderAmount: 10000})
	ctx := context.Background()
	u1, u2 := uuid.New(), uuid.New()
	e1, err := s.Issue(ctx, "DAY", u1)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := s.Issue(ctx, "DAY", u2)
	if err != nil {
		t.Fatal(err)
	}
	status := func(user uuid.UUID, want WalletStatus) {
		t.Helper()
		for _, st := range []WalletStatus{WalletUsable, WalletRedeemed, WalletExpired} {
			w, err := s.UserWallet(ctx, user, st)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(w) == 1; got != (st == want) {
				t.Errorf("at %v, ?status=%s lists %d entries; the entry is %s", c.Now(), st, len(w), want)
			}
		}
	}
	c.Set(e1.ExpiresAt.Add(-time.Millisecond))
	status(u1, WalletUsable)
	r, err := s.Redeem(ctx, e1.ID, u1, "order-1", 12000)
	if err != nil || r.BuyerPays != 9000 || r.SellerReceives != 12000 || r.DiscountAmount != 3000 {
		t.Fatalf("redeem 1 ms before expiry: %+v %v", r, err)
	}
	status(u1, WalletRedeemed)
	c.Set(e2.ExpiresAt)
	status(u2, WalletExpired)
	if _, err := s.Redeem(ctx, e2.ID, u2, "order-2", 12000); !errors.Is(err, domain.ErrExpired) {
		t.Fatalf("redeem at expiry: %v", err)
	}
	c.Set(e1.ExpiresAt.Add(time.Hour)) // redeemed stays redeemed, and a retry still answers the same
	status(u1, WalletRedeemed)
	again, err := s.Redeem(ctx, e1.ID, u1, "order-1", 12000)
	if err != nil || again != r {
		t.Fatalf("retry after expiry: %+v %v, first %+v", again, err, r)
	}
}

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
			c := &clock{t: local(tc.from)}
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
