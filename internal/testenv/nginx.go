package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const nginxInstallHint = "install it with: sudo apt-get update && sudo apt-get install -y nginx-light " +
	"(scripts/deps.sh does so without letting the package start a server on port 80)"

// Nginx is a throwaway nginx reverse proxy in front of some HTTP instances, configured like
// ingress-nginx's defaults (the Ingress controller of a Kubernetes deployment), so that tests
// and the bench see what a client of the deployed service sees:
//
//   - one `upstream` with the instances, round robin, every instance always eligible
//     (max_fails=0: ingress-nginx's Lua balancer never marks an endpoint down by itself);
//   - keep-alive to the instances: `keepalive 320`, `keepalive_requests 10000`,
//     `keepalive_timeout 60s`, `proxy_http_version 1.1`, `proxy_set_header Connection ""`;
//   - `proxy_next_upstream error timeout` with 3 tries: a request is tried on the next instance
//     only when no connection could be made to one or a timeout struck; a POST whose instance
//     dies mid-request is NOT retried elsewhere and is answered 502 (an HTML body);
//   - proxy timeouts 5 s connect, 60 s send/read; client keep-alive 75 s, 1,000 requests per
//     client connection (then nginx closes it); request bodies up to 1 MiB, response buffering
//     off; Host, X-Real-IP, X-Forwarded-For, X-Forwarded-Proto and X-Request-ID set as
//     ingress-nginx sets them;
//   - `worker_processes auto` (one worker per CPU), 16,384 connections per worker.
//
// One difference on purpose: no access log (ingress-nginx writes one per request; here it would
// only take CPU from what is measured). It listens on a free 127.0.0.1 port; its configuration,
// pid file, error log and temp paths live in a temporary directory.
//
// A watchdog process kills nginx's process group when the process that started it dies without
// Close (a test binary that panics or times out), so no nginx outlives its test.
type Nginx struct {
	URL       string // http://127.0.0.1:port
	Addr      string // 127.0.0.1:port
	Port      int
	Upstreams []string // host:port of the instances, in the configuration's order

	dir      string
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	watchdog *exec.Cmd
	closed   bool
	finalLog string // the error log as Close found it
}

// NewNginx starts an nginx in front of upstreams (host:port each) for this test; it is stopped
// and its files removed when the test ends. A missing nginx binary fails the test with the
// command that installs it.
func NewNginx(tb testing.TB, upstreams []string) *Nginx {
	tb.Helper()
	n, err := StartNginx(upstreams)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(n.Close)
	return n
}

// StartNginx starts an nginx in front of upstreams (host:port each) outside a test (the bench);
// Close stops it and removes its files. The instances need not be up yet: nginx answers 502 for
// a request that finds none.
func StartNginx(upstreams []string) (*Nginx, error) {
	if len(upstreams) == 0 {
		return nil, errors.New("nginx: no upstream")
	}
	bin, err := nginxBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "couponsvc-nginx-")
	if err != nil {
		return nil, err
	}
	// Run as root, nginx's workers run as nobody: they must reach the temp paths in here.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	n := &Nginx{Upstreams: append([]string(nil), upstreams...), dir: dir}
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before nginx binds it
		n.Port = freePortNoTB()
		n.Addr = fmt.Sprintf("127.0.0.1:%d", n.Port)
		n.URL = "http://" + n.Addr
		if err = n.start(bin); err == nil {
			return n, nil
		}
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("start nginx: %w", err)
}

func nginxBinary() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("nginx not found; %s", nginxInstallHint)
}

// nginxConf is the configuration: ingress-nginx's defaults for one Ingress rule that sends
// every path to one Service (see Nginx).
func (n *Nginx) nginxConf() string {
	d := n.dir
	var servers strings.Builder
	for _, u := range n.Upstreams {
		fmt.Fprintf(&servers, "        server %s max_fails=0;\n", u)
	}
	// nginx raises its workers' open-file limit to worker_rlimit_nofile, within the hard limit
	// (beyond it even root is refused where it lacks CAP_SYS_RESOURCE, as here).
	nofile := uint64(65536)
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Max < nofile {
		nofile = lim.Max
	}
	return fmt.Sprintf(`# written by couponsvc/internal/testenv: ingress-nginx's defaults, one backend
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile %[2]d;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;

events {
    worker_connections 16384;
    multi_accept on;
    use epoll;
}

http {
    access_log off;
    default_type application/octet-stream;
    server_tokens off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

    keepalive_timeout 75s;
    keepalive_requests 1000;
    client_max_body_size 1m;
    client_header_buffer_size 1k;
    large_client_header_buffers 4 8k;
    reset_timedout_connection on;

    upstream backend {
%[3]s        keepalive 320;
        keepalive_requests 10000;
        keepalive_timeout 60s;
    }

    server {
        listen %[4]s backlog=4096;

        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 5s;
            proxy_send_timeout 60s;
            proxy_read_timeout 60s;
            proxy_buffering off;
            proxy_buffer_size 4k;
            proxy_request_buffering on;
            proxy_next_upstream error timeout;
            proxy_next_upstream_timeout 0;
            proxy_next_upstream_tries 3;
        }
    }
}
`, d, nofile, servers.String(), n.Addr)
}

func (n *Nginx) start(bin string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	conf := filepath.Join(n.dir, "nginx.conf")
	errLog := filepath.Join(n.dir, "error.log")
	pidFile := filepath.Join(n.dir, "nginx.pid")
	os.Remove(pidFile)
	if err := os.WriteFile(conf, []byte(n.nginxConf()), 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(errLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-p", n.dir, "-c", conf, "-e", errLog)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr(nil) // own process group: the master and its workers
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start nginx: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	n.cmd, n.done = cmd, done
	n.watchdog = startWatchdog(cmd.Process.Pid)

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			n.stopWatchdog()
			return fmt.Errorf("nginx exited at start:\n%s", tail(n.readErrorLog(), 2000))
		default:
		}
		// The master writes its pid file after binding the listening socket.
		if _, err := os.Stat(pidFile); err == nil {
			if c, err := net.DialTimeout("tcp", n.Addr, 300*time.Millisecond); err == nil {
				c.Close()
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.killGroup()
	<-done
	n.stopWatchdog()
	return fmt.Errorf("nginx on %s not ready after 10s:\n%s", n.Addr, tail(n.readErrorLog(), 2000))
}

// startWatchdog starts a shell that kills process group pgid once its stdin (a pipe whose
// write end only this process holds) reaches EOF, i.e. when this process dies. nginx's workers
// do not die with their master, and the master's Pdeathsig does not reach them. nil when the
// shell cannot be started (then only Close/Kill stop nginx).
func startWatchdog(pgid int) *exec.Cmd {
	w := exec.Command("/bin/sh", "-c", `read _ ; kill -9 -`+strconv.Itoa(pgid)+` 2>/dev/null`)
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // no Pdeathsig: it must outlive us
	stdin, err := w.StdinPipe()
	if err != nil {
		return nil
	}
	if err := w.Start(); err != nil {
		return nil
	}
	_ = stdin // kept open (by the exec.Cmd) until this process exits
	return w
}

// stopWatchdog ends the watchdog without letting it signal (the group may be gone by now).
func (n *Nginx) stopWatchdog() {
	if n.watchdog == nil {
		return
	}
	_ = n.watchdog.Process.Kill()
	_ = n.watchdog.Wait()
	n.watchdog = nil
}

func (n *Nginx) killGroup() {
	if n.cmd != nil {
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Kill stops nginx abruptly (SIGKILL to the master and its workers), as a crash of the
// Ingress controller would: open client connections are cut. Close still removes the files.
func (n *Nginx) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done:
	default:
		n.killGroup()
		<-n.done
	}
	n.stopWatchdog()
}

// Close stops nginx (SIGTERM, nginx's fast shutdown: the master waits for its workers; the
// whole group is killed after 5 s) and removes its files.
func (n *Nginx) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.closed = true
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-n.done:
			case <-time.After(5 * time.Second):
				n.killGroup()
				<-n.done
			}
		}
		n.stopWatchdog()
	}
	n.finalLog = n.readErrorLog()
	os.RemoveAll(n.dir)
}

// ErrorLog is nginx's error log so far, or as it was when Close removed it (upstream failures
// are logged there at level error).
func (n *Nginx) ErrorLog() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return n.finalLog
	}
	return n.readErrorLog()
}

func (n *Nginx) readErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return string(b)
}

// Pid is the nginx master's process id (its workers are in its process group).
func (n *Nginx) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}
