package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgresRestart(t *testing.T) {
	p := NewPostgres(t)
	ctx := context.Background()
	ping := func() error {
		c, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		return c.Ping(ctx)
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	p.Stop(t)
	if err := ping(); err == nil {
		t.Fatal("stopped server answered")
	}
	p.Start(t)
	if err := ping(); err != nil {
		t.Fatal(err)
	}
}

func TestSharedDatabasesAreSeparate(t *testing.T) {
	a, b := Database(t), Database(t)
	if a == b {
		t.Fatalf("same DSN twice: %s", a)
	}
	c, err := pgx.Connect(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
}

func TestRedisStopStartPause(t *testing.T) {
	r := NewRedis(t)
	c := r.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Stop(t)
	r.Start(t)
	if n, _ := c.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("restarted node kept its data")
	}
	r.Pause(t)
	r.Resume(t)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

// nginx in front of two instances: round robin, keep-alive to the instances, and a POST whose
// instance drops the connection is answered 502 without being retried on the other one; Kill
// cuts it off.
func TestNginxRoundRobinKeepAliveNoPOSTRetry(t *testing.T) {
	type instance struct {
		srv      *httptest.Server
		requests atomic.Int64
		conns    atomic.Int64
	}
	var insts [2]*instance
	for i := range insts {
		in := &instance{}
		in.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			in.requests.Add(1)
			if r.Method == http.MethodPost && r.URL.Path == "/drop" { // dies mid-request
				c, _, _ := w.(http.Hijacker).Hijack()
				c.Close()
				return
			}
			fmt.Fprintf(w, "%d", i)
		}))
		in.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				in.conns.Add(1)
			}
		}
		in.srv.Start()
		t.Cleanup(in.srv.Close)
		insts[i] = in
	}
	n := NewNginx(t, []string{insts[0].srv.Listener.Addr().String(), insts[1].srv.Listener.Addr().String()})

	c := &http.Client{Timeout: 10 * time.Second}
	got := map[string]int{}
	for range 40 {
		resp, err := c.Get(n.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got[string(b)]++
	}
	if got["0"] != 20 || got["1"] != 20 {
		t.Errorf("40 GETs went %v, want 20 to each instance (round robin)", got)
	}
	for i, in := range insts {
		if k := in.conns.Load(); k > 2 {
			t.Errorf("instance %d: %d connections from nginx for 20 sequential requests (keep-alive to upstreams)", i, k)
		}
	}

	before := insts[0].requests.Load() + insts[1].requests.Load()
	resp, err := c.Post(n.URL+"/drop", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("POST to an instance that drops it: %d, want 502", resp.StatusCode)
	}
	if d := insts[0].requests.Load() + insts[1].requests.Load() - before; d != 1 {
		t.Errorf("the dropped POST reached the instances %d times, want once (no retry on another upstream)", d)
	}
	if !strings.Contains(n.ErrorLog(), "upstream prematurely closed") {
		t.Errorf("error log lacks the upstream failure:\n%s", n.ErrorLog())
	}

	n.Kill()
	if _, err := (&http.Client{Timeout: 2 * time.Second}).Get(n.URL + "/x"); err == nil {
		t.Error("killed nginx still answers")
	}
	n.Close()
	if !strings.Contains(n.ErrorLog(), "upstream prematurely closed") {
		t.Error("the error log is gone after Close")
	}
}
