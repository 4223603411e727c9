package service

import (
	"couponsvc/domain"

	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"couponsvc/engine"
)

// Daily schedules.
//
// A schedule's coupon for local day D is PREFIX-YYYYMMDD; it opens at the schedule's open time
// on D in the schedule's time zone and closes when the next day's coupon opens. Days are
// calendar dates, and each opening is computed in the zone from that date, so a DST change makes
// one window 23 or 25 hours long and never moves the local open time. A date that does not
// exist in the zone (Samoa skipped 30 December 2011) has no coupon; the previous day's window
// runs until the next day that exists.
//
// Every instance materialises the coupons that are due (opening within ScheduleLead, not yet
// closed, opening after the schedule was created) when a schedule is created and every
// ScheduleEvery; PostgreSQL's UNIQUE (schedule_id,
// schedule_day) makes one of them win per day. An instance that was down over midnight creates
// the current day's coupon as soon as it runs; a day whose window closed while every instance
// was down is not created after the fact.

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,55}$`)

// ParseOpenTime parses a local time of day "HH:MM" (24-hour) into minutes past midnight.
func ParseOpenTime(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil || len(s) != 5 {
		return 0, invalid("openTime must be HH:MM (24-hour), e.g. 13:00")
	}
	return t.Hour()*60 + t.Minute(), nil
}

// FormatOpenTime is the inverse of ParseOpenTime.
func FormatOpenTime(minute int) string { return fmt.Sprintf("%02d:%02d", minute/60, minute%60) }

// loadZone loads an IANA time zone; "" and "Local" are refused (they mean this machine's zone).
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, invalid("timeZone must be an IANA time zone name such as Asia/Seoul")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, invalid("timeZone %s is not a known IANA time zone", strconv.Quote(name))
	}
	return loc, nil
}

// CreateSchedule stores a daily schedule and materialises the coupons already due, so that one
// created less than ScheduleLead before an opening has its coupon within moments.
func (s *Service) CreateSchedule(ctx context.Context, sc domain.Schedule) (domain.Schedule, error) {
	sc.CreatedAt = s.now()
	switch {
	case !prefixPattern.MatchString(sc.CodePrefix):
		return domain.Schedule{}, invalid("codePrefix must be 1 to 55 letters, digits, '-' or '_'")
	case sc.Name == "" || utf8.RuneCountInString(sc.Name) > maxNameLength-len(" 2006-01-02") || !utf8.ValidString(sc.Name):
		return domain.Schedule{}, invalid("name must be 1 to %d characters", maxNameLength-len(" 2006-01-02"))
	case sc.OpenMinute < 0 || sc.OpenMinute >= 24*60:
		return domain.Schedule{}, invalid("openTime must be HH:MM (24-hour)")
	case sc.QuantityPerDay < 0 || sc.QuantityPerDay > maxQuantity:
		return domain.Schedule{}, invalid("quantityPerDay must be between 0 and %d", maxQuantity)
	case sc.DiscountAmount < 0 || sc.DiscountAmount > maxAmount:
		return domain.Schedule{}, invalid("discountAmount must be between 0 and %d", int64(maxAmount))
	case sc.ValidDays < 1 || sc.ValidDays > maxValidDays:
		return domain.Schedule{}, invalid("validDays must be between 1 and %d", maxValidDays)
	case sc.MinOrderAmount < 0 || sc.MinOrderAmount > maxAmount:
		return domain.Schedule{}, invalid("minOrderAmount must be between 0 and %d", int64(maxAmount))
	}
	if _, err := loadZone(sc.TimeZone); err != nil {
		return domain.Schedule{}, err
	}
	out, err := s.repo.CreateSchedule(ctx, sc)
	if err != nil {
		return domain.Schedule{}, engine.Translate(err)
	}
	s.log.Info("schedule created", "prefix", out.CodePrefix, "open_time", FormatOpenTime(out.OpenMinute),
		"time_zone", out.TimeZone, "quantity_per_day", out.QuantityPerDay)
	// The schedule is stored: a failure here is retried by every instance's next round.
	if err := s.materialise(ctx, out, s.now()); err != nil {
		s.log.Warn("materialise new schedule", "prefix", out.CodePrefix, "err", err)
	}
	return out, nil
}

// ListSchedules returns every schedule.
func (s *Service) ListSchedules(ctx context.Context) ([]domain.Schedule, error) {
	out, err := s.repo.ListSchedules(ctx)
	if err != nil {
		return nil, engine.Translate(err)
	}
	return out, nil
}

// MaterialiseSchedules creates the due daily coupons of every schedule.
func (s *Service) MaterialiseSchedules(ctx context.Context) {
	scheds, err := s.repo.ListSchedules(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("list schedules", "err", err)
		}
		return
	}
	now := s.now()
	for _, sc := range scheds {
		if err := s.materialise(ctx, sc, now); err != nil && ctx.Err() == nil {
			s.log.Warn("materialise schedule", "prefix", sc.CodePrefix, "err", err)
		}
	}
}

// materialise creates schedule sc's coupons due at now: those opening within ScheduleLead, not
// closed yet, and opening after the schedule was created.
func (s *Service) materialise(ctx context.Context, sc domain.Schedule, now time.Time) error {
	loc, err := loadZone(sc.TimeZone)
	if err != nil {
		return err
	}
	y, m, d := now.In(loc).Date()
	today := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	for i := -2; i <= 2; i++ {
		day := today.AddDate(0, 0, i)
		opens, closes, ok := occurrence(day, sc.OpenMinute, loc)
		// A day that opened before the schedule existed is not the schedule's: an operator
		// creating a 13:00 drop at 12:50 gets today's coupon, not yesterday's still running.
		if !ok || opens.Before(sc.CreatedAt) || now.Before(opens.Add(-s.cfg.ScheduleLead)) || !now.Before(closes) {
			continue
		}
		c := domain.Coupon{
			Code: dailyCode(sc.CodePrefix, day), Name: sc.Name + " " + day.Format(time.DateOnly),
			DiscountAmount: sc.DiscountAmount, TotalQuantity: sc.QuantityPerDay,
			OpensAt: opens, ClosesAt: &closes, ValidDays: sc.ValidDays, MinOrderAmount: sc.MinOrderAmount,
		}
		created, err := s.repo.MaterialiseCoupon(ctx, c, sc.ID, day)
		if err != nil {
			return fmt.Errorf("materialise %s: %w", c.Code, engine.Translate(err))
		}
		if created {
			s.metrics.CouponsMaterialised.Inc()
			s.log.Info("daily coupon created", "coupon", c.Code, "opens_at", opens, "closes_at", closes,
				"quantity", c.TotalQuantity)
		}
	}
	return nil
}

// dailyCode is the code of a schedule's coupon for a local day: PREFIX-YYYYMMDD.
func dailyCode(prefix string, day time.Time) string { return prefix + "-" + day.Format("20060102") }

// occurrence is the window of a schedule's coupon for the calendar date of day (its year, month
// and day, whatever its location): it opens minute minutes past local midnight in loc and closes
// when the next date that exists opens. ok is false when the date has no such local time.
func occurrence(day time.Time, minute int, loc *time.Location) (opens, closes time.Time, ok bool) {
	opens, ok = openingOn(day, minute, loc)
	if !ok {
		return time.Time{}, time.Time{}, false
	}
	for i := 1; i <= 3; i++ { // a zone skips at most one date
		if closes, ok = openingOn(day.AddDate(0, 0, i), minute, loc); ok {
			return opens, closes, true
		}
	}
	return time.Time{}, time.Time{}, false
}

// openingOn is the instant minute minutes past local midnight of day's date in loc; ok is false
// when the date does not exist there (time.Date then lands on another date).
func openingOn(day time.Time, minute int, loc *time.Location) (time.Time, bool) {
	y, m, d := day.Date()
	t := time.Date(y, m, d, minute/60, minute%60, 0, 0, loc)
	ty, tm, td := t.Date()
	return t, ty == y && tm == m && td == d
}

// every calls fn at once and then every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
