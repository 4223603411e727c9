package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is one design's HTTP server, running as a subprocess of the bench.
type server struct {
	base    string // http://127.0.0.1:port
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error

	stopOnce sync.Once
	stopErr  error
	stopping chan struct{}
	early    bool // the process had exited before stop was called

	mu      sync.Mutex
	maxRSS  int64 // bytes, highest VmRSS sampled
	hwm     int64 // bytes, VmHWM last read
	sampler chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer starts bin with args and env (plus HTTP_ADDR on a free loopback port), waits for
// /readyz to answer 200 and starts sampling the process's RSS.
func startServer(ctx context.Context, bin string, args, env []string, logPath string) (*server, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before the server binds it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := startServerOn(ctx, bin, args, env, logPath, port)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startServerOn(ctx context.Context, bin string, args, env []string, logPath string, port int) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), env...), "HTTP_ADDR="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &server{base: "http://" + addr, cmd: cmd, logPath: logPath, done: make(chan struct{}),
		stopping: make(chan struct{}), sampler: make(chan struct{})}
	go func() { s.waitErr = cmd.Wait(); logf.Close(); close(s.done) }()

	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited at start (%v):\n%s", bin, s.waitErr, s.logTail(3000))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		default:
		}
		if resp, err := c.Get(s.base + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s not ready on %s after 60s:\n%s", bin, addr, s.logTail(3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	go s.sampleRSS()
	return s, nil
}

func (s *server) logTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// sampleRSS reads VmRSS and VmHWM from /proc every 50 ms until the server stops.
func (s *server) sampleRSS() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		s.readRSS()
		select {
		case <-s.stopping:
			return
		case <-s.done:
			return
		case <-t.C:
		}
	}
}

func (s *server) readRSS() {
	rss, hwm, err := procMemory(s.cmd.Process.Pid)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.maxRSS = max(s.maxRSS, rss)
	s.hwm = max(s.hwm, hwm)
	s.mu.Unlock()
}

// peakRSS is the process's peak resident set (VmHWM, or the highest sample when higher), in bytes.
func (s *server) peakRSS() int64 {
	s.readRSS()
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.maxRSS, s.hwm)
}

// procMemory reads VmRSS and VmHWM (bytes) of pid.
func procMemory(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &rss
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &hwm
		default:
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 2 {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			*dst = kb << 10
		}
	}
	return rss, hwm, sc.Err()
}

// goroutines reads go_goroutines from /metrics (-1 when it cannot).
func (s *server) goroutines(ctx context.Context) int {
	if v, ok := s.metrics(ctx)["go_goroutines"]; ok {
		return int(v)
	}
	return -1
}

// promValues are the samples of a /metrics page, keyed by name with labels as written
// (`couponsvc_issue_batch_size_bucket{le="64"}`).
type promValues map[string]float64

// metrics reads /metrics (nil when it cannot), over a connection of its own that is closed
// afterwards.
func (s *server) metrics(ctx context.Context) promValues {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := promValues{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if f, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = f
			}
		}
	}
	return out
}

// mean of a histogram (NaN without observations).
func (p promValues) mean(name string) float64 {
	return p[name+"_sum"] / p[name+"_count"]
}

// quantile of a histogram: the upper bound of the bucket holding it (NaN without observations).
func (p promValues) quantile(name string, q float64) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range p {
		if le, ok := strings.CutPrefix(k, prefix); ok {
			if f, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64); err == nil {
				bs = append(bs, bucket{f, v})
			}
		}
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	total := p[name+"_count"]
	for _, b := range bs {
		if total > 0 && b.n >= q*total {
			return b.le
		}
	}
	return math.NaN()
}

// stop sends SIGTERM (the API's graceful stop) and kills the server after 15 s.
func (s *server) stop() error {
	s.stopOnce.Do(func() {
		close(s.stopping)
		select {
		case <-s.done:
			s.early = true
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			s.stopErr = fmt.Errorf("did not exit within 15 s of SIGTERM; killed")
		}
	})
	return s.stopErr
}

// exitedEarly describes an exit that happened before stop was asked for ("" when none).
func (s *server) exitedEarly() string {
	select {
	case <-s.done:
	default:
		return ""
	}
	select {
	case <-s.stopping:
		if !s.early {
			return ""
		}
	default:
	}
	log := s.logTail(64 << 10)
	for _, head := range []string{"panic:", "fatal error:"} { // and the top of the goroutine's stack
		if i := strings.Index(log, head); i >= 0 {
			return fmt.Sprintf("%v: %s", s.waitErr, strings.TrimSpace(log[i:min(len(log), i+1500)]))
		}
	}
	return fmt.Sprintf("%v: %s", s.waitErr, s.logTail(500))
}
