package testenv

import (
	"context"
	"testing"

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
