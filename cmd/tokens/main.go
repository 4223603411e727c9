// Command tokens is a stand-in identity provider for load tests of identity mode: it mints N
// access tokens for N users from a local signing key, writes them as a CSV for the JMeter plan
// (userId,token per line), and serves the key's JWK Set so that a couponsvc configured to trust
// it verifies them:
//
//	go run ./cmd/tokens -n 10000 -out jmeter/results/tokens.csv       # serves on 127.0.0.1:8089
//	AUTH_JWKS_URL=http://127.0.0.1:8089/jwks.json AUTH_ISSUER=http://127.0.0.1:8089 \
//	    AUTH_AUDIENCE=couponsvc make run                               # in another terminal
//	go run ./jmeter/cmd/loadtest -tokens jmeter/results/tokens.csv
//
// The key is kept in -key (created when missing), so the same JWK Set and issuer keep working
// across runs. A deployment elsewhere must reach the JWK Set: -serve 0.0.0.0:8089 -issuer
// http://<this host's address>:8089. Never point a production deployment at it: whoever holds
// the key file can be anyone.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"couponsvc/internal/auth"
	"couponsvc/internal/idp"

	"github.com/google/uuid"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "tokens:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tokens", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 10000, "tokens to mint, one per user")
	out := fs.String("out", "tokens.csv", "CSV to write: userId,token per line, no header (the JMeter plan's -Jtokens)")
	keyPath := fs.String("key", filepath.Join(".data", "tokens-key.pem"), "RS256 signing key, PKCS #8 PEM; created when missing")
	serve := fs.String("serve", "127.0.0.1:8089", "serve the JWK Set at http://ADDR/jwks.json until interrupted; empty: mint and exit")
	issuer := fs.String("issuer", "", "the tokens' iss and couponsvc's AUTH_ISSUER (default http://<-serve address>)")
	audience := fs.String("audience", "couponsvc", "the tokens' aud and couponsvc's AUTH_AUDIENCE")
	ttl := fs.Duration("ttl", 2*time.Hour, "token lifetime")
	scope := fs.String("scope", "", "scope claim of every token (e.g. coupons:redeem for an order service)")
	subjects := fs.String("subjects", "uuid", "uuid: each subject a random UUID (the user id as it is); name: loadtest-user-N (mapped to a name-based UUID)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *n < 0 || (*subjects != "uuid" && *subjects != "name") {
		return errors.New("-n must be >= 0 and -subjects uuid or name")
	}
	if *issuer == "" {
		if *serve == "" {
			return errors.New("-issuer is required with -serve ''")
		}
		*issuer = "http://" + *serve
	}
	*issuer = strings.TrimSuffix(*issuer, "/")

	if err := os.MkdirAll(filepath.Dir(*keyPath), 0o700); err != nil {
		return err
	}
	key, err := idp.LoadOrCreateKey(*keyPath)
	if err != nil {
		return err
	}
	p, err := idp.New(*issuer, key)
	if err != nil {
		return err
	}
	subs := make([]string, *n)
	for i := range subs {
		if *subjects == "uuid" {
			subs[i] = uuid.NewString()
		} else {
			subs[i] = fmt.Sprintf("loadtest-user-%d-%s", i+1, uuid.NewString()[:8])
		}
	}
	start := time.Now()
	toks, err := p.MintAll(subs, idp.Claims{Audience: []string{*audience}, Scope: *scope, Lifetime: *ttl})
	if err != nil {
		return err
	}
	if err := writeCSV(*out, *issuer, subs, toks); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d tokens (RS256, kid %s, valid %v) written to %s in %v\n", *n, key.ID, *ttl, *out, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "couponsvc settings to trust them:\n  AUTH_JWKS_URL=%s/jwks.json\n  AUTH_ISSUER=%s\n  AUTH_AUDIENCE=%s\n",
		*issuer, *issuer, *audience)
	if *serve == "" {
		return nil
	}
	ln, err := net.Listen("tcp", *serve)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Fprintf(stdout, "serving the JWK Set at http://%s/jwks.json (Ctrl-C to stop)\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// writeCSV writes userId,token per line: the user id couponsvc derives from each subject (so
// the plan's body can name it), and the token.
func writeCSV(path, issuer string, subs, toks []string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i, tok := range toks {
		fmt.Fprintf(w, "%s,%s\n", auth.UserID(issuer, subs[i]), tok)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
