// Package testenv starts throwaway PostgreSQL and Redis servers, an nginx configured like
// ingress-nginx in front of service instances, and a Kubernetes API server (etcd and a pinned
// kube-apiserver) for the manifests, for tests: real servers in temporary directories on free
// loopback ports, so every test talks to the real thing and needs no setup. A server that cannot be started fails the test (never skips it): a missing binary
// is reported with the exact package to install.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

const installHint = "install it with: sudo apt-get update && sudo apt-get install -y postgresql redis-server"

// Bounds on waiting for the servers' processes: initdb takes about 1.3 s, and a process
// that outlives SIGKILL by killWait is stuck in the kernel.
const (
	initdbWait = 2 * time.Minute
	killWait   = 10 * time.Second
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// procAttr makes a child die with the test binary (so a crashed test leaves no server behind)
// and, when running as root, run as the given user.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred, Setpgid: true}
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

// Postgres is a throwaway PostgreSQL server.
type Postgres struct {
	Port int

	bin      string
	dir      string
	cred     *syscall.Credential
	durable  bool
	settings []string // extra "name=value" server settings
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
}

func pgBinDir() (string, error) {
	if p, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(p, "--bindir").Output(); err == nil {
			dir := strings.TrimSpace(string(out))
			if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // newest major version first
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) not found; %s", installHint)
}

// postgresCredential: initdb and postgres refuse to run as root, so as root they run as the
// postgres user.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a 'postgres' user for initdb: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// NewPostgres initialises and starts a PostgreSQL server of its own for this test (use it for
// tests that stop or restart the server); it is removed when the test ends.
func NewPostgres(tb testing.TB) *Postgres {
	tb.Helper()
	p, err := StartPostgres(false)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.close(); err != nil {
			tb.Errorf("testenv: %v", err)
		}
	})
	return p
}

// StartPostgres initialises and starts a PostgreSQL server outside a test (benchmarks); Close
// removes it. durable keeps PostgreSQL's durability settings at their defaults (fsync,
// synchronous_commit, full_page_writes on), as a benchmark must; tests turn them off. settings
// are further "name=value" server settings.
func StartPostgres(durable bool, settings ...string) (*Postgres, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "couponsvc-pg-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	p := &Postgres{bin: bin, dir: dir, cred: cred, durable: durable, settings: settings}
	ctx, cancel := context.WithTimeout(context.Background(), initdbWait)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", p.dataDir(), "-U", "postgres",
		"--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	initdb.SysProcAttr = procAttr(cred)
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("initdb did not finish within %v (it takes about 1.3 s)\n%s", initdbWait, out)
		}
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before we bind it
		p.Port = freePortNoTB()
		if lastErr = p.start(); lastErr == nil {
			return p, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func freePortNoTB() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (p *Postgres) dataDir() string { return filepath.Join(p.dir, "data") }

func (p *Postgres) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(p.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	args := []string{"-D", p.dataDir(), "-p", strconv.Itoa(p.Port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=", "-c", "max_connections=300"}
	if !p.durable {
		// A throwaway server for tests: durability is not what they check.
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for _, kv := range p.settings {
		args = append(args, "-c", kv)
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr(p.cred)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
			return fmt.Errorf("postgres exited at start:\n%s", tail(string(log), 2000))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, p.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		time.Sleep(30 * time.Millisecond)
	}
	cmd.Process.Kill()
	return fmt.Errorf("postgres on port %d not ready after 15s", p.Port)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// DSN returns a pgx connection string for database db on this server.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// Stop shuts the server down (fast mode: open sessions are cut, as in a real restart).
func (p *Postgres) Stop(tb testing.TB) {
	tb.Helper()
	if err := p.signalAndWait(syscall.SIGINT); err != nil {
		tb.Fatalf("testenv: stop postgres: %v", err)
	}
}

// Kill stops the server abruptly (SIGKILL), as a crash would.
func (p *Postgres) Kill(tb testing.TB) {
	tb.Helper()
	if err := p.signalAndWait(syscall.SIGKILL); err != nil {
		tb.Fatalf("testenv: kill postgres: %v", err)
	}
}

// Pause freezes the server and its backends (SIGSTOP): connections stay open and nothing
// answers, as when a database host stalls. Resume undoes it. It returns once every process of
// the server is stopped. (Backends make themselves process group leaders: each is signalled.)
func (p *Postgres) Pause(tb testing.TB) {
	tb.Helper()
	pid := p.postmasterPid(tb)
	_ = syscall.Kill(pid, syscall.SIGSTOP) // first: no new backend is forked meanwhile
	for _, child := range childrenOf(pid) {
		_ = syscall.Kill(child, syscall.SIGSTOP)
	}
	WaitFor(tb, 5*time.Second, "every PostgreSQL process stopped", func() bool {
		for _, q := range append(childrenOf(pid), pid) {
			if st, ok := procField(q, 0); ok && st != "T" && st != "t" {
				return false
			}
		}
		return true
	})
}

// Resume lets a paused server go on.
func (p *Postgres) Resume(tb testing.TB) {
	tb.Helper()
	pid := p.postmasterPid(tb)
	for _, child := range childrenOf(pid) {
		_ = syscall.Kill(child, syscall.SIGCONT)
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
}

func (p *Postgres) postmasterPid(tb testing.TB) int {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		tb.Fatalf("testenv: postgres is not running")
	}
	return p.cmd.Process.Pid
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		q, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := procField(q, 1); ok && ppid == strconv.Itoa(pid) {
			out = append(out, q)
		}
	}
	return out
}

// procField returns field i after the command of /proc/pid/stat (0: state, 1: ppid, 2: pgrp).
func procField(pid, i int) (string, bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", false
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) <= i {
		return "", false
	}
	return f[i], true
}

// Start starts a stopped server again on the same port with the same data.
func (p *Postgres) Start(tb testing.TB) {
	tb.Helper()
	if err := p.start(); err != nil {
		tb.Fatalf("testenv: restart postgres: %v", err)
	}
}

// signalAndWait signals the server's process group and waits for the postmaster to exit:
// 20 s, then SIGKILL and killWait more, after which it gives up with an error.
func (p *Postgres) signalAndWait(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig) // the whole group: postmaster and its backends
	select {
	case <-done:
		return nil
	case <-time.After(20 * time.Second):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("postgres (pid %d) still running %v after SIGKILL", cmd.Process.Pid, killWait)
	}
}

// Close stops the server and removes its files.
func (p *Postgres) Close() { _ = p.close() }

func (p *Postgres) close() error {
	err := p.signalAndWait(syscall.SIGKILL)
	os.RemoveAll(p.dir)
	return err
}

// CreateDatabase creates a fresh, empty database and returns its DSN.
func (p *Postgres) CreateDatabase(tb testing.TB) string {
	tb.Helper()
	dsn, err := p.NewDatabase()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return dsn
}

// NewDatabase creates a fresh, empty database and returns its DSN.
func (p *Postgres) NewDatabase() (string, error) {
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), dbSeq.Add())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	return p.DSN(name), nil
}

// BinDir is the directory of the PostgreSQL server binaries in use (pgbench lives there too).
func (p *Postgres) BinDir() string { return p.bin }

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) Add() int { c.mu.Lock(); defer c.mu.Unlock(); c.n++; return c.n }

var dbSeq counter

var shared struct {
	once sync.Once
	pg   *Postgres
	err  error
}

// Database returns the DSN of a fresh database on a PostgreSQL server shared by the whole test
// binary (started on first use, removed by Main). Use NewPostgres instead when the test stops
// or restarts the server.
func Database(tb testing.TB) string {
	tb.Helper()
	shared.once.Do(func() { shared.pg, shared.err = StartPostgres(false) })
	if shared.err != nil {
		tb.Fatalf("testenv: shared postgres: %v", shared.err)
	}
	return shared.pg.CreateDatabase(tb)
}

// Main runs the package's tests and then removes the shared servers. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if shared.pg != nil {
		shared.pg.Close()
	}
	os.Exit(code)
}

// ---------------------------------------------------------------------------------------------
// Redis

// Redis is a throwaway redis-server that keeps nothing on disk.
type Redis struct {
	Addr string
	Port int

	dir  string
	args []string // more redis-server arguments (NewRedisWith)
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// NewRedis starts a redis-server of its own for this test; it is stopped when the test ends.
func NewRedis(tb testing.TB) *Redis { tb.Helper(); return NewRedisWith(tb) }

// NewRedisWith is NewRedis with more redis-server arguments (e.g. "--user", …: ACL users).
func NewRedisWith(tb testing.TB, args ...string) *Redis {
	tb.Helper()
	r, err := startRedis(args)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		if err := r.close(); err != nil {
			tb.Errorf("testenv: %v", err)
		}
	})
	return r
}

// StartRedis starts a redis-server outside a test (benchmarks); Close removes it.
func StartRedis() (*Redis, error) { return startRedis(nil) }

func startRedis(args []string) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not found; %s", installHint)
	}
	dir, err := os.MkdirTemp("", "couponsvc-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{dir: dir, args: args}
	for attempt := 0; attempt < 3; attempt++ {
		r.Port = freePortNoTB()
		r.Addr = fmt.Sprintf("127.0.0.1:%d", r.Port)
		if err = r.start(); err == nil {
			return r, nil
		}
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("start redis-server: %w", err)
}

// Close stops the node and removes its files.
func (r *Redis) Close() { _ = r.close() }

func (r *Redis) close() error {
	err := r.signalAndWait(syscall.SIGKILL)
	os.RemoveAll(r.dir)
	return err
}

// Pid is the node's process id (for a benchmark to read its resource use).
func (r *Redis) Pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd.Process.Pid
}

// NewRedisNodes starts n independent redis-servers (a Redlock quorum's nodes).
func NewRedisNodes(tb testing.TB, n int) []*Redis {
	tb.Helper()
	nodes := make([]*Redis, n)
	for i := range nodes {
		nodes[i] = NewRedis(tb)
	}
	return nodes
}

// Addrs lists the nodes' addresses.
func Addrs(nodes []*Redis) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Addr
	}
	return out
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"),
		"--maxclients", "10000")
	cmd.Args = append(cmd.Args, r.args...)
	cmd.SysProcAttr = procAttr(nil)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	r.cmd, r.done = cmd, done
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			return fmt.Errorf("redis-server exited at start:\n%s", tail(string(log), 2000))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		var refused redis.Error // the server answered, if only to refuse the default user (ACL)
		if err == nil || errors.As(err, &refused) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	return fmt.Errorf("redis-server on %s not ready after 10s", r.Addr)
}

// signalAndWait signals the node and waits for it to exit: 10 s, then SIGKILL and killWait
// more, after which it gives up with an error.
func (r *Redis) signalAndWait(sig syscall.Signal) error {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if sig == syscall.SIGKILL {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT) // a paused server must not linger
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("redis-server (pid %d) still running %v after SIGKILL", cmd.Process.Pid, killWait)
	}
}

// Stop kills the node; its data is gone (it keeps nothing on disk).
func (r *Redis) Stop(tb testing.TB) {
	tb.Helper()
	if err := r.signalAndWait(syscall.SIGKILL); err != nil {
		tb.Fatalf("testenv: stop redis: %v", err)
	}
}

// Start starts a stopped node again on the same address, empty.
func (r *Redis) Start(tb testing.TB) {
	tb.Helper()
	if err := r.start(); err != nil {
		tb.Fatalf("testenv: restart redis: %v", err)
	}
}

// Pause freezes the node (SIGSTOP): connections stay open but nothing answers, as with a
// stalled host or a network partition.
func (r *Redis) Pause(tb testing.TB) {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		tb.Fatalf("testenv: pause redis: %v", err)
	}
}

// Resume unfreezes a paused node.
func (r *Redis) Resume(tb testing.TB) {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		tb.Fatalf("testenv: resume redis: %v", err)
	}
}

// Client returns a go-redis client for this node, closed when the test ends.
func (r *Redis) Client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	tb.Cleanup(func() { c.Close() })
	return c
}
