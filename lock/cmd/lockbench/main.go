// Command lockbench measures the lock under contention, side by side with plain redsync: the
// handover latency (one holder's release to the next holder's grant, p50/p99) and the grants
// per second while many goroutines contend for one lock. It starts three throwaway
// redis-servers itself unless -addrs names existing nodes.
//
//	go run ./lock/cmd/lockbench [-goroutines 200] [-duration 5s] [-hold 0] [-addrs a,b,c]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"couponsvc/internal/stats"
	"couponsvc/lock"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lockbench", flag.ContinueOnError)
	goroutines := fs.Int("goroutines", 200, "contending goroutines per scenario")
	duration := fs.Duration("duration", 5*time.Second, "length of each scenario")
	hold := fs.Duration("hold", 0, "time spent inside the critical section")
	addrsFlag := fs.String("addrs", "", "comma-separated Redis nodes (default: start 3 throwaway redis-servers)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addrs := strings.Split(*addrsFlag, ",")
	if *addrsFlag == "" {
		var stop func()
		var err error
		addrs, stop, err = startRedis(3)
		if err != nil {
			return err
		}
		defer stop()
	}

	fmt.Fprintf(stdout, "%d Redis nodes, %d goroutines contending for one lock, %v per scenario, hold %v, GOMAXPROCS %d\n\n",
		len(addrs), *goroutines, *duration, *hold, runtime.GOMAXPROCS(0))
	scenarios := []struct {
		name string
		run  func(ctx context.Context, name string, r *recorder)
	}{
		{"lock: 1 client (1 process)", func(ctx context.Context, name string, r *recorder) {
			runOurs(ctx, addrs, 1, *goroutines, *hold, name, r)
		}},
		{"lock: 3 clients (3 processes)", func(ctx context.Context, name string, r *recorder) {
			runOurs(ctx, addrs, 3, *goroutines, *hold, name, r)
		}},
		{"redsync: default options", func(ctx context.Context, name string, r *recorder) {
			runRedsync(ctx, addrs, *goroutines, *hold, name, r)
		}},
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tgrants/s\thandovers/s\thandover p50\thandover p99\tre-grants\twait p99\twait max\tfailed\t")
	for i, sc := range scenarios {
		r := &recorder{}
		ctx, cancel := context.WithTimeout(context.Background(), *duration)
		start := time.Now()
		sc.run(ctx, fmt.Sprintf("bench:%d:%d", time.Now().UnixNano(), i), r)
		cancel()
		elapsed := min(time.Since(start), *duration)
		h50, h99, _ := quantiles(r.handovers)
		_, w99, wmax := quantiles(r.waits)
		regrants := 0.0
		if r.grants > 0 {
			regrants = 100 * float64(r.regrants) / float64(r.grants)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%v\t%v\t%.0f%%\t%v\t%v\t%d\t\n", sc.name, float64(r.grants)/elapsed.Seconds(),
			float64(len(r.handovers))/elapsed.Seconds(), h50.Round(time.Microsecond), h99.Round(time.Microsecond), regrants,
			w99.Round(time.Millisecond), wmax.Round(time.Millisecond), r.failed)
	}
	return tw.Flush()
}

// recorder measures handovers: a holder notes the time just before it releases, and the next
// grant to a different goroutine measures from there (grants are exclusive, so one shared note
// suffices). A goroutine that releases and at once takes the lock again is a re-grant, not a
// handover; it is counted apart, and the wait of every acquisition shows who starves.
type recorder struct {
	mu          sync.Mutex
	lastRelease time.Time
	lastHolder  int
	handovers   []time.Duration
	waits       []time.Duration
	grants      int
	regrants    int
	failed      int
}

func (r *recorder) granted(ctx context.Context, id int, asked time.Time) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil {
		return // after the measured window
	}
	r.grants++
	r.waits = append(r.waits, now.Sub(asked))
	switch {
	case r.lastRelease.IsZero():
	case id == r.lastHolder:
		r.regrants++
	default:
		r.handovers = append(r.handovers, now.Sub(r.lastRelease))
	}
	r.lastHolder = id
}

func (r *recorder) releasing() {
	r.mu.Lock()
	r.lastRelease = time.Now()
	r.mu.Unlock()
}

func (r *recorder) fail(ctx context.Context) {
	r.mu.Lock()
	if ctx.Err() == nil {
		r.failed++
	}
	r.mu.Unlock()
}

func quantiles(d []time.Duration) (p50, p99, pmax time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return stats.Percentile(d, 0.50), stats.Percentile(d, 0.99), d[len(d)-1]
}

func work(hold time.Duration) {
	if hold > 0 {
		time.Sleep(hold)
	}
}

// runOurs spreads the goroutines over `clients` lock Clients, each like one process.
func runOurs(ctx context.Context, addrs []string, clients, goroutines int, hold time.Duration, name string, r *recorder) {
	var wg sync.WaitGroup
	id := 0
	for i := range clients {
		c := lock.New(lock.NewNodes(addrs, "", ""))
		defer c.Close()
		m := c.Mutex(name)
		n := goroutines / clients
		if i < goroutines%clients {
			n++
		}
		for range n {
			id++
			wg.Add(1)
			go func(id int) {
				defer wg.Done()
				octx := lock.WithOwner(ctx, lock.NewOwner())
				for ctx.Err() == nil {
					asked := time.Now()
					if err := m.Lock(octx); err != nil {
						r.fail(ctx)
						continue
					}
					r.granted(ctx, id, asked)
					work(hold)
					r.releasing()
					if err := m.Unlock(octx); err != nil && !errors.Is(err, lock.ErrLockLost) {
						r.fail(ctx)
					}
				}
			}(id)
		}
	}
	wg.Wait()
}

// runRedsync is plain redsync as its README shows it: go-redis clients with default options and
// a Mutex with default options (8s expiry, 32 tries, 50-250ms random retry delay).
func runRedsync(ctx context.Context, addrs []string, goroutines int, hold time.Duration, name string, r *recorder) {
	pools := make([]redsyncredis.Pool, len(addrs))
	for i, a := range addrs {
		client := redis.NewClient(&redis.Options{Addr: a})
		defer client.Close()
		pools[i] = goredis.NewPool(client)
	}
	rs := redsync.New(pools...)
	var wg sync.WaitGroup
	for id := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				m := rs.NewMutex(name)
				asked := time.Now()
				if err := m.LockContext(ctx); err != nil {
					r.fail(ctx)
					continue
				}
				r.granted(ctx, id+1, asked)
				work(hold)
				r.releasing()
				if _, err := m.UnlockContext(context.Background()); err != nil {
					r.fail(ctx)
				}
			}
		}()
	}
	wg.Wait()
}

// startRedis starts n throwaway redis-servers (no persistence) on free loopback ports.
func startRedis(n int) ([]string, func(), error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, nil, fmt.Errorf("redis-server not found (apt-get install -y redis-server), or pass -addrs")
	}
	var cmds []*exec.Cmd
	var dirs []string
	stop := func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		dir, err := os.MkdirTemp("", "lockbench-redis-")
		if err != nil {
			stop()
			return nil, nil, err
		}
		dirs = append(dirs, dir)
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--maxclients", "10000")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, err
		}
		cmds = append(cmds, cmd)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if err := waitPing(addr); err != nil {
			stop()
			return nil, nil, err
		}
		addrs = append(addrs, addr)
	}
	return addrs, stop, nil
}

func waitPing(addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
