package jmeter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Coupon is one entry of GET /api/v1/coupons.
type Coupon struct {
	Code           string `json:"code"`
	TotalQuantity  int    `json:"totalQuantity"`
	IssuedQuantity int    `json:"issuedQuantity"`
	Remaining      int    `json:"remaining"`
}

// FetchCoupons asks the API at apiURL (e.g. http://127.0.0.1:8080/api/v1) for GET {apiURL}/coupons.
func FetchCoupons(ctx context.Context, apiURL string) ([]Coupon, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	url := strings.TrimRight(apiURL, "/") + "/coupons"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", url, resp.Status, body)
	}
	coupons, err := ParseCoupons(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return coupons, nil
}

// ParseCoupons decodes GET /api/v1/coupons: a JSON array of coupons, or an object whose one
// array member holds them (e.g. {"coupons":[...]}).
func ParseCoupons(body []byte) ([]Coupon, error) {
	var list []Coupon
	if err := json.Unmarshal(body, &list); err == nil {
		return list, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, fmt.Errorf("decode coupons: %w: %.300s", err, body)
	}
	for _, v := range obj {
		if err := json.Unmarshal(v, &list); err == nil && len(list) > 0 && list[0].Code != "" {
			return list, nil
		}
	}
	return nil, fmt.Errorf("decode coupons: no list of coupons in %.300s", body)
}

// ReadCouponsFile reads a saved GET /api/v1/coupons answer.
func ReadCouponsFile(path string) ([]Coupon, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCoupons(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// WriteCouponsFile saves coupons for a later comparison.
func WriteCouponsFile(path string, coupons []Coupon) error {
	b, err := json.MarshalIndent(coupons, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Verify checks a run against the service's own figures and returns what is wrong (nothing when
// the run passed):
//   - every answer is 201, 409 or 410 (no 5xx, no 429, no timeouts, no other 4xx);
//   - no user got 409 on a first request (each first request is from a fresh user);
//   - no coupon is issued above its stock (after, and when given, before);
//   - when before is given: the service's issuedQuantity grew by exactly the 201s in the .jtl,
//     and a coupon that answered 410 has nothing left (sold out means exactly the stock issued).
//
// Without before, the 201s are compared with issuedQuantity itself, which holds for a fresh
// database only (as in the smoke test).
func Verify(s Summary, before, after []Coupon) []string {
	var problems []string
	if s.Samples == 0 {
		return []string{"the .jtl has no samples"}
	}
	if s.Failed > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d requests failed: answers other than 201/409/410 (5xx %d, no HTTP answer %d): %v",
			s.Failed, s.Samples, s.ServerError, s.NonHTTP, s.ByStatus))
	}
	for _, code := range sortedKeys(s.FreshDup) {
		problems = append(problems, fmt.Sprintf("%s: %d first requests of fresh users answered 409 ALREADY_ISSUED", code, s.FreshDup[code]))
	}
	if after == nil {
		return problems
	}
	prev := map[string]Coupon{}
	for _, c := range before {
		prev[c.Code] = c
	}
	seen := map[string]bool{}
	for _, c := range after {
		seen[c.Code] = true
		if c.IssuedQuantity > c.TotalQuantity {
			problems = append(problems, fmt.Sprintf("%s: issuedQuantity %d above totalQuantity %d", c.Code, c.IssuedQuantity, c.TotalQuantity))
		}
		if c.Remaining != c.TotalQuantity-c.IssuedQuantity {
			problems = append(problems, fmt.Sprintf("%s: remaining %d != totalQuantity %d - issuedQuantity %d", c.Code, c.Remaining, c.TotalQuantity, c.IssuedQuantity))
		}
		requested := false
		for label := range s.ByLabel {
			if CouponCode(label) == c.Code {
				requested = true
			}
		}
		if !requested {
			continue
		}
		delta := c.IssuedQuantity
		if before != nil {
			delta -= prev[c.Code].IssuedQuantity
		}
		if delta != s.Issued[c.Code] {
			problems = append(problems, fmt.Sprintf("%s: the service issued %d during the run but the .jtl has %d answers 201", c.Code, delta, s.Issued[c.Code]))
		}
		if s.ByLabel["issue "+c.Code]["410"]+s.ByLabel["retry "+c.Code]["410"] > 0 && c.IssuedQuantity != c.TotalQuantity {
			problems = append(problems, fmt.Sprintf("%s: answered 410 SOLD_OUT but issued %d of %d", c.Code, c.IssuedQuantity, c.TotalQuantity))
		}
	}
	for code := range s.Issued {
		if !seen[code] {
			problems = append(problems, fmt.Sprintf("%s: answered 201 but missing from GET /api/v1/coupons", code))
		}
	}
	return problems
}

// WriteCoupons prints the coupons table: stock, issued before and after, and the 201s of the run.
func WriteCoupons(w io.Writer, s Summary, before, after []Coupon) {
	prev := map[string]Coupon{}
	for _, c := range before {
		prev[c.Code] = c
	}
	fmt.Fprintf(w, "%-8s %8s %8s %8s %10s %10s\n", "coupon", "stock", "before", "after", "run: 201", "remaining")
	for _, c := range after {
		b := "-"
		if before != nil {
			b = fmt.Sprint(prev[c.Code].IssuedQuantity)
		}
		fmt.Fprintf(w, "%-8s %8d %8s %8d %10d %10d\n", c.Code, c.TotalQuantity, b, c.IssuedQuantity, s.Issued[c.Code], c.Remaining)
	}
}
