package peer

import (
	"couponsvc/domain"
	"couponsvc/internal/seal"

	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// A peer batch that is not well formed is refused as invalid before it reaches the service.
func TestDecodeBatchRefusesBadInput(t *testing.T) {
	u := uuid.NewString()
	for name, body := range map[string]string{
		"not JSON":       `{`,
		"unknown field":  `{"from":"10.0.0.1:8080","coupons":[],"x":1}`,
		"no from":        `{"coupons":[{"code":"A0001","requests":[{"u":"` + u + `","a":1}]}]}`,
		"from not addr":  `{"from":"evil","coupons":[{"code":"A0001","requests":[{"u":"` + u + `","a":1}]}]}`,
		"no coupons":     `{"from":"10.0.0.1:8080","coupons":[]}`,
		"bad code":       `{"from":"10.0.0.1:8080","coupons":[{"code":"../x","requests":[{"u":"` + u + `","a":1}]}]}`,
		"no requests":    `{"from":"10.0.0.1:8080","coupons":[{"code":"A0001","requests":[]}]}`,
		"nil user":       `{"from":"10.0.0.1:8080","coupons":[{"code":"A0001","requests":[{"u":"00000000-0000-0000-0000-000000000000","a":1}]}]}`,
		"user not UUID":  `{"from":"10.0.0.1:8080","coupons":[{"code":"A0001","requests":[{"u":"x","a":1}]}]}`,
		"too many users": `{"from":"10.0.0.1:8080","coupons":[{"code":"A0001","requests":[` + strings.Repeat(`{"u":"`+u+`","a":1},`, MaxRequests) + `{"u":"` + u + `","a":1}]}]}`,
	} {
		if _, err := DecodeBatch(strings.NewReader(body)); !errors.Is(err, domain.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// What a sender encodes, the receiver decodes: coupons, relay flags, users and arrival times.
func TestDecodeBatchKeepsWhatWasSent(t *testing.T) {
	at := time.Unix(0, 1764243000123456789)
	u1, u2 := uuid.New(), uuid.New()
	body := `{"from":"10.0.0.1:8080","coupons":[{"code":"A0001","requests":[{"u":"` + u1.String() + `","a":1764243000123456789}]},` +
		`{"code":"B0001","relay":true,"requests":[{"u":"` + u2.String() + `","a":1764243000123456789}]}]}`
	b, err := DecodeBatch(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if b.From != "10.0.0.1:8080" || len(b.Coupons) != 2 || b.Coupons[0].Code != "A0001" || b.Coupons[0].Relay ||
		!b.Coupons[1].Relay || b.Coupons[0].Requests[0].User != u1 || b.Coupons[1].Requests[0].User != u2 ||
		!b.Coupons[0].Requests[0].Arrived.Equal(at) {
		t.Fatalf("decoded %+v", b)
	}
}

// A lock's holder info names an owner only when sealed with the instances' key: a value
// written by anyone else who can reach Redis (another address, a MAC of another address, or
// none) names nobody.
func TestOwnerFromHolderInfo(t *testing.T) {
	key := seal.Key("test-cluster-key-of-at-least-32-bytes")
	c := NewClient(key)
	info := HolderInfo(key, "10.0.0.7:8080")
	if addr, ok := c.Owner(info); !ok || addr != "10.0.0.7:8080" {
		t.Fatalf("Owner(%q) = %q %v", info, addr, ok)
	}
	_, mac, _ := strings.Cut(info, ",")
	for _, forged := range []string{"", "10.6.6.6:8080", "10.6.6.6:8080," + mac, "10.0.0.7:8080,", "10.0.0.7:8080,00" + mac[2:],
		HolderInfo(seal.Key("another-key-of-at-least-32-bytes!!"), "10.6.6.6:8080")} {
		if addr, ok := c.Owner(forged); ok {
			t.Errorf("Owner(%q) = %q, want none", forged, addr)
		}
	}
	// Without a key (one instance, a demo) the address is taken as it is.
	if addr, ok := NewClient(nil).Owner(HolderInfo(nil, "127.0.0.1:8080")); !ok || addr != "127.0.0.1:8080" {
		t.Errorf("without a key: %q %v", addr, ok)
	}
}
