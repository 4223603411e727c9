package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
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

const kubeInstallHint = "scripts/deps.sh test installs etcd (apt-get install -y etcd-server) and builds the " +
	"pinned kube-apiserver (scripts/kube.sh kube-apiserver); make test runs it"

// Bounds on waiting for the Kubernetes servers. etcd answers /health in under a second and
// kube-apiserver /readyz in about 4 s on an idle machine; the margins are for a loaded one. A cold
// build of kube-apiserver takes 6 to 8 minutes on 2 cores.
const (
	etcdReadyWait      = 30 * time.Second
	apiserverReadyWait = 2 * time.Minute
	kubeBuildWait      = 20 * time.Minute
	kubeStopWait       = 10 * time.Second
)

// Kube is a throwaway Kubernetes API server: an etcd and the kube-apiserver pinned in
// scripts/kube/go.mod, on free 127.0.0.1 ports, their data, certificates and logs in a temporary
// directory. It validates, defaults and stores objects exactly as a cluster's API server does;
// no controller or kubelet runs, so no pod is ever created and nothing scales by itself.
//
// Clients authenticate with a static bearer token in the group system:masters (every
// permission), over TLS with a CA made for this server. Kubeconfig holds both, for kubectl.
type Kube struct {
	URL        string // https://127.0.0.1:port
	Kubeconfig string // a kubeconfig file for the admin token; current context "test"
	Kubectl    string // the kubectl to use against it (scripts/kube.sh kubectl)
	Token      string // the admin bearer token

	dir       string
	caPool    *x509.CertPool
	etcd      *kubeProc
	apiserver *kubeProc
}

// NewKube starts a Kubernetes API server for this test; it is stopped and its files removed when
// the test ends. etcd missing, or the pinned kube-apiserver neither built nor buildable, fails the
// test saying how to get them.
func NewKube(tb testing.TB) *Kube {
	tb.Helper()
	k, err := StartKube(buildWait(tb))
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		if err := k.Close(); err != nil {
			tb.Errorf("testenv: %v", err)
		}
	})
	return k
}

// StartKube starts a Kubernetes API server outside a test; Close stops it and removes its files.
// buildWait bounds the build of the pinned binaries when they are not in the cache yet.
func StartKube(buildWait time.Duration) (*Kube, error) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("etcd not found; %s", kubeInstallHint)
	}
	apiserverBin, err := kubeBinary("kube-apiserver", buildWait)
	if err != nil {
		return nil, err
	}
	kubectl, err := kubeBinary("kubectl", buildWait)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "couponsvc-kube-")
	if err != nil {
		return nil, err
	}
	k := &Kube{dir: dir, Kubectl: kubectl}
	if err := k.writeCredentials(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := k.startEtcd(etcdBin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := k.startAPIServer(apiserverBin); err != nil {
		k.etcd.stop()
		os.RemoveAll(dir)
		return nil, err
	}
	return k, nil
}

// Close stops kube-apiserver, then etcd, and removes their files.
func (k *Kube) Close() error {
	var errs []error
	for _, p := range []*kubeProc{k.apiserver, k.etcd} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	os.RemoveAll(k.dir)
	return errors.Join(errs...)
}

// Dir is the server's temporary directory: a test may keep files of its own there.
func (k *Kube) Dir() string { return k.dir }

// Env is the environment for running kubectl (or a shell script that runs kubectl) against this
// server: KUBECONFIG set to Kubeconfig, kubectl's discovery cache in the temporary directory
// rather than ~/.kube/cache, and Kubectl's directory first on PATH.
func (k *Kube) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "KUBECONFIG", "KUBECACHEDIR", "PATH":
		default:
			env = append(env, kv)
		}
	}
	return append(env, "KUBECONFIG="+k.Kubeconfig, "KUBECACHEDIR="+filepath.Join(k.dir, "kubectl-cache"),
		"PATH="+filepath.Dir(k.Kubectl)+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// HTTPClient is a client that trusts this server's CA and sends the admin token.
func (k *Kube) HTTPClient() *http.Client {
	return &http.Client{Transport: &bearer{token: k.Token, next: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: k.caPool, MinVersion: tls.VersionTLS12},
	}}}
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// Kubectl is the kubectl to run against a Kube (scripts/kube.sh kubectl: the machine's when it
// suits the pinned server, else the pinned one, built first when needed).
func Kubectl(tb testing.TB) string {
	tb.Helper()
	p, err := kubeBinary("kubectl", buildWait(tb))
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return p
}

// buildWait is how long a test may wait for scripts/kube.sh: kubeBuildWait, or less when the
// test's deadline is nearer (with 30 s left to report).
func buildWait(tb testing.TB) time.Duration {
	wait := kubeBuildWait
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok && time.Until(dl)-30*time.Second < wait {
			wait = time.Until(dl) - 30*time.Second
		}
	}
	return wait
}

// kubeBinaries caches scripts/kube.sh's answers for the test binary's life.
var kubeBinaries sync.Map // name -> path

// kubeBinary asks scripts/kube.sh for the path of a pinned Kubernetes command, which builds it
// into its cache first when needed (make test has done so before the tests start).
func kubeBinary(name string, buildWait time.Duration) (string, error) {
	if p, ok := kubeBinaries.Load(name); ok {
		return p.(string), nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	if buildWait <= 0 {
		return "", fmt.Errorf("no time left to run scripts/kube.sh %s", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "kube.sh"), name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) } // go build too
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("scripts/kube.sh %s did not finish within %v (a cold build of kube-apiserver takes 6 to 8 minutes on 2 cores: run scripts/kube.sh %s alone, or make test, which builds it before the tests)\n%s",
				name, buildWait.Round(time.Second), name, tail(stderr.String(), 2000))
		}
		return "", fmt.Errorf("scripts/kube.sh %s: %v\n%s", name, err, tail(stderr.String(), 4000))
	}
	p := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("scripts/kube.sh %s printed %q: %v", name, p, err)
	}
	kubeBinaries.Store(name, p)
	return p, nil
}

// repoRoot is the directory of couponsvc's go.mod, found upwards from the working directory (a
// package's directory under go test).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module couponsvc\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("couponsvc's go.mod not found above the working directory")
		}
		dir = parent
	}
}

// writeCredentials makes the CA, the serving certificate, the service-account signing key, the
// token file and the kubeconfig.
func (k *Kube) writeCredentials() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "couponsvc test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	k.Token = hex.EncodeToString(token)
	k.caPool = x509.NewCertPool()
	k.caPool.AddCert(ca)

	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.crt":     caPEM,
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		// A static token with every permission (system:masters), as kubeadm's admin.conf has a
		// client certificate with them.
		"tokens.csv": []byte(k.Token + `,admin,admin,"system:masters"` + "\n"),
	}
	for name, key := range map[string]*ecdsa.PrivateKey{"server.key": srvKey, "sa.key": saKey} {
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		files[name] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(k.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (k *Kube) writeKubeconfig() error {
	k.Kubeconfig = filepath.Join(k.dir, "kubeconfig")
	conf := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: %s
      certificate-authority: %s
users:
  - name: admin
    user:
      token: %s
contexts:
  - name: test
    context:
      cluster: test
      user: admin
current-context: test
`, k.URL, filepath.Join(k.dir, "ca.crt"), k.Token)
	return os.WriteFile(k.Kubeconfig, []byte(conf), 0o600)
}

func (k *Kube) startEtcd(bin string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before etcd binds it
		client, peer := freePortNoTB(), freePortNoTB()
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
		data := filepath.Join(k.dir, "etcd-"+strconv.Itoa(attempt))
		k.etcd, err = startKubeProc(k.dir, "etcd", bin,
			"--name", "test", "--data-dir", data,
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "test="+peerURL, "--initial-cluster-state", "new",
			"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
		if err != nil {
			return err
		}
		err = k.etcd.waitReady(etcdReadyWait, http.DefaultClient, clientURL+"/health", func(body []byte) bool {
			return bytes.Contains(body, []byte(`"health":"true"`))
		})
		if err == nil {
			k.etcd.url = clientURL
			return nil
		}
		k.etcd.stop()
	}
	return fmt.Errorf("start etcd: %w", err)
}

func (k *Kube) startAPIServer(bin string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		port := freePortNoTB()
		k.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
		f := func(name string) string { return filepath.Join(k.dir, name) }
		k.apiserver, err = startKubeProc(k.dir, "kube-apiserver", bin,
			"--etcd-servers", k.etcd.url,
			"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", strconv.Itoa(port),
			"--tls-cert-file", f("server.crt"), "--tls-private-key-file", f("server.key"), "--cert-dir", f("certs"),
			"--token-auth-file", f("tokens.csv"), "--anonymous-auth=false", "--authorization-mode", "RBAC",
			"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file", f("sa.key"), "--service-account-signing-key-file", f("sa.key"),
			"--service-cluster-ip-range", "10.96.0.0/16",
			// No kubelet or controller runs, so the apiserver must not reconcile its own
			// endpoints (it would wait for a lease nobody renews).
			"--endpoint-reconciler-type", "none",
			"--profiling=false")
		if err != nil {
			return err
		}
		err = k.apiserver.waitReady(apiserverReadyWait, k.HTTPClient(), k.URL+"/readyz", func(body []byte) bool {
			return bytes.Equal(bytes.TrimSpace(body), []byte("ok"))
		})
		if err == nil {
			return k.writeKubeconfig()
		}
		k.apiserver.stop()
	}
	return fmt.Errorf("start kube-apiserver: %w", err)
}

// kubeProc is a server process of a Kube, its stderr and stdout in <dir>/<name>.log.
type kubeProc struct {
	name, logPath, url string
	cmd                *exec.Cmd
	done               chan struct{}
}

func startKubeProc(dir, name, bin string, args ...string) (*kubeProc, error) {
	p := &kubeProc{name: name, logPath: filepath.Join(dir, name+".log")}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = procAttr(nil) // dies with the test binary
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// waitReady polls url until ok accepts a 200's body; it fails when the process exits or within
// passes, with the end of the process's log.
func (p *kubeProc) waitReady(within time.Duration, client *http.Client, url string, ok func([]byte) bool) error {
	deadline := time.Now().Add(within)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited at start:\n%s", p.name, p.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && ok(body) {
				cancel()
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, tail(string(body), 500))
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v at %s (last: %s):\n%s", p.name, within, url, last, p.logTail())
}

func (p *kubeProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	return tail(string(b), 3000)
}

// stop sends SIGTERM and waits kubeStopWait, then SIGKILL and killWait more.
func (p *kubeProc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(kubeStopWait):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", p.name, p.cmd.Process.Pid, killWait)
	}
}
