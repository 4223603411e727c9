package domain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestErrorTable(t *testing.T) {
	codes := map[string]bool{}
	for _, e := range Errors {
		if codes[e.Code] {
			t.Errorf("code %s twice in the table", e.Code)
		}
		codes[e.Code] = true
		if e.Status < 400 || e.Status > 599 || e.Label == "" || e.Message == "" {
			t.Errorf("%s: status %d, label %q, message %q", e.Code, e.Status, e.Label, e.Message)
		}
		if (e.Param != "") != strings.Contains(e.Message, "%q") {
			t.Errorf("%s: message %q and param %q do not go together", e.Code, e.Message, e.Param)
		}
		if ByCode(e.Code) != e {
			t.Errorf("ByCode(%s) is not its row", e.Code)
		}
	}
}

func TestErrorOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want *Error
	}{
		{nil, nil},
		{fmt.Errorf("issue A0001: %w", ErrSoldOut), ErrSoldOut},
		{fmt.Errorf("lock: %w: %w", ErrUnavailable, errors.New("dial tcp: refused")), ErrUnavailable},
		{fmt.Errorf("list: %w", context.Canceled), Canceled},
		{errors.New("can't scan into dest[0]"), Internal},
	} {
		if got := ErrorOf(tc.err); got != tc.want {
			t.Errorf("ErrorOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// docs/API.md's error table is this table: the same codes with the same statuses.
func TestAPIDocumentListsTheErrorTable(t *testing.T) {
	doc, err := os.ReadFile("../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]int{}
	for _, m := range regexp.MustCompile("(?m)^\\| (\\d{3}) \\| `([A-Z_]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		status, _ := strconv.Atoi(m[1])
		documented[m[2]] = status
	}
	for _, e := range Errors {
		if e == Canceled {
			continue // nobody reads it
		}
		if got, ok := documented[e.Code]; !ok || got != e.Status {
			t.Errorf("docs/API.md: %s documented with status %d, the service answers %d", e.Code, got, e.Status)
		}
		delete(documented, e.Code)
	}
	for code := range documented {
		t.Errorf("docs/API.md documents %s, which the service never answers", code)
	}
}
