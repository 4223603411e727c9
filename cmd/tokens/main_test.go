package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"couponsvc/internal/auth"

	"github.com/google/uuid"
)

// The command's tokens verify against the JWK Set it serves, and the CSV's user ids are the ones
// couponsvc derives from their subjects; the key file keeps the same key across runs.
func TestTokensVerifyAgainstServedJWKS(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	keyPath := filepath.Join(dir, "key.pem")
	for _, subjects := range []string{"uuid", "name"} {
		csv := filepath.Join(dir, subjects+".csv")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		var out bytes.Buffer
		go func() {
			done <- run(ctx, []string{"-n", "5", "-out", csv, "-key", keyPath, "-serve", addr, "-subjects", subjects, "-scope", "coupons:redeem"}, &out, &out)
		}()
		issuer := "http://" + addr
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get(issuer + "/jwks.json")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("JWK Set not served within 30 s: %v\n%s", err, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		vctx, vcancel := context.WithCancel(context.Background())
		v, err := auth.New(vctx, auth.Config{JWKSURL: issuer + "/jwks.json", Issuer: issuer, Audience: "couponsvc"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(csv)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 5 {
			t.Fatalf("%s: %d lines, want 5", subjects, len(lines))
		}
		seen := map[string]bool{}
		for _, line := range lines {
			user, tok, ok := strings.Cut(line, ",")
			if !ok || seen[user] {
				t.Fatalf("line %q", line)
			}
			seen[user] = true
			id, err := v.Verify(context.Background(), "Bearer "+tok)
			if err != nil {
				t.Fatalf("%s: token does not verify: %v", subjects, err)
			}
			if id.User.String() != user || !id.CanRedeem {
				t.Errorf("%s: token of user %s (scope %v), CSV says %s", subjects, id.User, id.CanRedeem, user)
			}
			if _, err := uuid.Parse(id.Subject); (err == nil) != (subjects == "uuid") {
				t.Errorf("-subjects %s: subject %q", subjects, id.Subject)
			}
		}
		vcancel()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the command did not stop within 10 s of its context")
		}
		if !strings.Contains(out.String(), fmt.Sprintf("AUTH_ISSUER=%s", issuer)) {
			t.Errorf("output lacks the settings:\n%s", out.String())
		}
	}
}
