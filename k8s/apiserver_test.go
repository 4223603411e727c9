package k8s

// The manifests meet a real Kubernetes API server: etcd and the kube-apiserver pinned in
// scripts/kube/go.mod (testenv.Kube), driven with kubectl exactly as k8s/README.md tells users to.
// The server validates (strict field validation), defaults and stores every object; no controller
// or kubelet runs, so no pod starts and only the commands below change what is stored.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"couponsvc/internal/testenv"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// commandWait bounds one kubectl command or one README block: each takes about a second.
const commandWait = 2 * time.Minute

// TestAPIServerEveryKustomization applies every kustomization under k8s/ (a new overlay is picked
// up by itself) to a fresh API server with k8s/README.md's server-side apply, and checks
// what the server stored: every rendered object and nothing else, accepted without a warning,
// and the same checks as on the rendered objects (Services select their workload's pods on
// existing ports, Ingress backends name existing Services and ports, ConfigMap and Secret
// references resolve, the PDB selects the API pods, probes use declared ports, ...), now on the
// objects as the server defaulted them. Applying again must store nothing new, and a server-side
// dry run of every kustomization must pass once the namespace exists.
func TestAPIServerEveryKustomization(t *testing.T) {
	dirs := kustomizations(t)
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			k := testenv.NewKube(t)
			want := render(t, dir)
			kubectl(t, k, ".", "apply", "--server-side", "--force-conflicts", "-k", dir)
			got, versions := stored(t, k, want)
			if !slices.Equal(got.names, want.names) {
				t.Errorf("the server stored %v, the kustomization renders %v", got.names, want.names)
			}
			checkAll(t, got)

			// Applying the same manifests again writes no object. (Under client-side apply the
			// StatefulSet and the PDB report "configured" every time, though nothing is
			// written: kubectl's patch always carries their volumeClaimTemplates and selector.)
			kubectl(t, k, ".", "apply", "--server-side", "--force-conflicts", "-k", dir)
			_, again := stored(t, k, want)
			for _, name := range sortedKeys(versions) {
				if again[name] != versions[name] {
					t.Errorf("applying %s again rewrote %s (resourceVersion %s -> %s)", dir, name, versions[name], again[name])
				}
			}

			for _, other := range dirs {
				kubectl(t, k, ".", "apply", "--server-side", "--dry-run=server", "-k", other)
			}
		})
	}
}

// TestREADMESwitch runs the blocks of k8s/README.md marked <!-- tested: NAME --> in the order a
// user does, from the repository root, against a fresh API server: install, pre-scale for an
// event, normal traffic (the HPA then changes the replica count, as its controller would), normal
// traffic applied again, back to the event setup, and once more both ways. A watch sees every
// version of the Deployment the server stored: none may have fewer than 3 replicas, and none is
// left with an HPA once back in the event setup.
func TestREADMESwitch(t *testing.T) {
	blocks := readmeBlocks(t)
	k := testenv.NewKube(t)
	root := copyManifests(t, k)
	w := watchDeployment(t, k, "coupon-api")

	// k8s/README.md says a dry run needs the namespace first: with none yet, it fails.
	_, stderr, err := run(t, k, root, "kubectl", "apply", "--server-side", "--dry-run=server", "-k", "k8s/")
	if err == nil || !strings.Contains(stderr, `namespaces "coupon" not found`) {
		t.Errorf("a server-side dry run before the namespace exists: got %v\n%s\nk8s/README.md says it fails with namespaces \"coupon\" not found; update it", err, stderr)
	}

	runBlock(t, k, root, blocks, "install")
	expect(t, k, w, 3, false, "after the install")

	setEventReplicas(t, root, 6)
	runBlock(t, k, root, blocks, "event-setup")
	expect(t, k, w, 6, false, "after raising the event's count to 6")

	runBlock(t, k, root, blocks, "normal-traffic")
	d := expect(t, k, w, 6, true, "after switching to normal traffic")
	if owners := replicasOwners(t, d); slices.Contains(owners, "kubectl/Apply") {
		t.Errorf("in normal traffic kubectl's apply still owns spec.replicas (owners %v): the next apply of k8s/autoscale/ would take it from the HPA", owners)
	}

	hpaScales(t, k, root, 4)
	expect(t, k, w, 4, true, "after the HPA scaled to 4")
	runBlock(t, k, root, blocks, "normal-traffic")
	expect(t, k, w, 4, true, "after applying normal traffic again: the HPA's count must stay")

	setEventReplicas(t, root, 3)
	runBlock(t, k, root, blocks, "event-setup")
	expect(t, k, w, 3, false, "after switching back to the event setup")

	runBlock(t, k, root, blocks, "normal-traffic")
	expect(t, k, w, 3, true, "after switching to normal traffic a second time")
	runBlock(t, k, root, blocks, "event-setup")
	expect(t, k, w, 3, false, "after switching back a second time")

	w.check(t, 3)
}

// TestREADMEMonitoring runs k8s/README.md's monitoring block against a real API server that
// has the Prometheus Operator's CRDs (from the pinned prometheus-operator module, as
// kube-prometheus-stack installs them), next to the event setup: every object is stored as
// rendered, without a warning.
func TestREADMEMonitoring(t *testing.T) {
	blocks := readmeBlocks(t)
	k := testenv.NewKube(t)
	root := copyManifests(t, k)
	runBlock(t, k, root, blocks, "install")
	crds := operatorCRDs(t)
	for _, crd := range []string{"monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"} {
		kubectl(t, k, root, "apply", "--server-side", "-f", filepath.Join(crds, crd))
	}
	kubectl(t, k, root, "wait", "--for=condition=established", "--timeout=30s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
	runBlock(t, k, root, blocks, "monitoring")
	for _, obj := range []string{"servicemonitor/coupon-api", "prometheusrule/couponsvc-event", "configmap/couponsvc-dashboard"} {
		kubectl(t, k, root, "-n", namespace, "get", obj, "-o", "name")
	}
}

// prometheusOperator is the module whose CRDs the monitoring test installs: the newest version
// of the operator's main module the Go module proxy serves (its API types, a module of their
// own, are newer; the two CRDs' schemas cover what k8s/monitoring uses).
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

// operatorCRDs downloads the pinned operator module through the Go module proxy (once, into the
// module cache) and returns its directory of CRDs.
func operatorCRDs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "mod", "download", "-json", prometheusOperator)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v\n%s", prometheusOperator, err, out)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %s %v", prometheusOperator, out, err)
	}
	return filepath.Join(mod.Dir, "example", "prometheus-operator-crd")
}

// TestREADMESwitchFromClientSideApply: a deployment installed with the previous README's
// client-side `kubectl apply -k k8s/` switches as k8s/README.md says: the event setup once first
// (kubectl moves the fields' ownership from client-side to server-side apply), then as any other.
// Without that first step the handover's partial apply would do the move, to its own field
// manager, and kubectl warns that it failed to re-apply the configuration.
func TestREADMESwitchFromClientSideApply(t *testing.T) {
	blocks := readmeBlocks(t)
	k := testenv.NewKube(t)
	root := copyManifests(t, k)
	w := watchDeployment(t, k, "coupon-api")

	kubectl(t, k, root, "apply", "-k", "k8s/")
	expect(t, k, w, 3, false, "after a client-side install")
	runBlock(t, k, root, blocks, "event-setup")
	expect(t, k, w, 3, false, "after the event setup")
	runBlock(t, k, root, blocks, "normal-traffic")
	d := expect(t, k, w, 3, true, "after switching to normal traffic")
	if owners := replicasOwners(t, d); slices.Contains(owners, "kubectl/Apply") || slices.Contains(owners, "kubectl-client-side-apply/Update") {
		t.Errorf("in normal traffic an apply of the manifests still owns spec.replicas (owners %v): the next one would take it from the HPA", owners)
	}
	hpaScales(t, k, root, 5)
	expect(t, k, w, 5, true, "after the HPA scaled to 5")
	runBlock(t, k, root, blocks, "event-setup")
	expect(t, k, w, 3, false, "after switching back to the event setup")
	w.check(t, 3)
}

// TestSwitchWithoutTheREADMEDropsReplicas is the check above failing where it must: the previous
// README's plain client-side applies, and server-side applies without the handover, store 1
// replica on the way to normal traffic, and neither deletes the HPA on the way back. Should this
// stop happening (a kubectl or server change), the checks of the README's commands above may have
// become vacuous, or the commands needlessly long: look at them again.
func TestSwitchWithoutTheREADMEDropsReplicas(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string // kubectl apply's flags before -k
	}{
		{"client-side", nil},
		{"server-side", []string{"--server-side", "--force-conflicts"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := testenv.NewKube(t)
			root := copyManifests(t, k)
			w := watchDeployment(t, k, "coupon-api")
			apply := func(dir string) {
				t.Helper()
				kubectl(t, k, root, append(append([]string{"apply"}, c.args...), "-k", dir)...)
			}
			apply("k8s/")
			apply("k8s/autoscale/")
			d := current(t, k, w)
			if fewest := w.fewest(); fewest >= 3 {
				t.Errorf("applying k8s/autoscale/ after k8s/ never stored fewer than 3 replicas (fewest %d, now %s): the watch no longer sees the drop it is there to catch", fewest, count(d.Spec.Replicas))
			}
			apply("k8s/")
			if !hasHPA(t, k) {
				t.Errorf("applying k8s/ after k8s/autoscale/ deleted the HPA: the README's explicit delete may no longer be needed")
			}
		})
	}
}

// TestREADMECommandsAreTested: every `kubectl apply` in a code block of README.md or
// k8s/README.md is a line of a block that TestREADMESwitch runs, so the READMEs show exactly the
// tested commands.
func TestREADMECommandsAreTested(t *testing.T) {
	blocks := readmeBlocks(t)
	for _, name := range []string{"install", "event-setup", "normal-traffic"} {
		if blocks[name] == "" {
			t.Errorf("k8s/README.md has no block marked <!-- tested: %s -->", name)
		}
	}
	tested := map[string]bool{}
	for _, script := range blocks {
		for _, line := range strings.Split(script, "\n") {
			if m := kubectlApply.FindString(line); m != "" {
				tested[commandOf(m)] = true
			}
		}
	}
	for _, file := range []string{"README.md", "../README.md"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range codeLines(string(b)) {
			if m := kubectlApply.FindString(line); m != "" && !tested[commandOf(m)] {
				t.Errorf("%s shows %q, which no tested block of k8s/README.md runs", file, commandOf(m))
			}
		}
	}
}

var kubectlApply = regexp.MustCompile(`kubectl (?:-n \S+ )?apply\b.*`)

// codeLines are the lines of a Markdown text's code blocks, fenced or indented.
func codeLines(md string) []string {
	var out []string
	fenced := false
	for _, line := range strings.Split(md, "\n") {
		switch {
		case strings.HasPrefix(strings.TrimSpace(line), "```"):
			fenced = !fenced
		case fenced, strings.HasPrefix(line, "    "):
			out = append(out, line)
		}
	}
	return out
}

// commandOf is a README line without its trailing comment and line continuation.
func commandOf(line string) string {
	if i := strings.Index(line, " # "); i >= 0 {
		line = line[:i]
	}
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), "\\"))
}

var testedBlock = regexp.MustCompile("(?s)<!-- tested: ([a-z-]+) -->\\s*```sh\\n(.*?)```")

// readmeBlocks returns k8s/README.md's blocks marked <!-- tested: NAME -->, by name.
func readmeBlocks(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]string{}
	for _, m := range testedBlock.FindAllStringSubmatch(string(b), -1) {
		if _, dup := blocks[m[1]]; dup {
			t.Fatalf("k8s/README.md: two blocks marked <!-- tested: %s -->", m[1])
		}
		blocks[m[1]] = m[2]
	}
	return blocks
}

// waitsForPods are README lines that wait for running pods: no kubelet runs here, so they are
// the only lines of a tested block that are not run.
var waitsForPods = regexp.MustCompile(`^\s*kubectl .*\brollout status\b`)

// runBlock runs a tested block of k8s/README.md from root with bash -euo pipefail, as a user
// pastes it (minus the lines that wait for pods); it must succeed without a warning.
func runBlock(t *testing.T, k *testenv.Kube, root string, blocks map[string]string, name string) {
	t.Helper()
	script, ok := blocks[name]
	if !ok {
		t.Fatalf("k8s/README.md has no block marked <!-- tested: %s -->", name)
	}
	var lines []string
	for _, line := range strings.Split(script, "\n") {
		if !waitsForPods.MatchString(line) {
			lines = append(lines, line)
		}
	}
	stdout, stderr, err := run(t, k, root, "bash", "-euo", "pipefail", "-c", strings.Join(lines, "\n"))
	if err != nil {
		t.Fatalf("k8s/README.md block %q: %v\n%s\n%s", name, err, stdout, stderr)
	}
	t.Logf("k8s/README.md block %q:\n%s%s", name, stdout, stderr)
	noWarnings(t, "block "+name, stderr)
}

// hpaScales sets the API's replicas as the HPA's controller does, through the scale
// subresource: none runs here, so the test writes what it would.
func hpaScales(t *testing.T, k *testenv.Kube, root string, replicas int) {
	t.Helper()
	kubectl(t, k, root, "-n", namespace, "patch", "deployment", "coupon-api", "--subresource=scale",
		"--field-manager=kube-controller-manager", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas))
}

// kubectl runs kubectl in dir; it must succeed without a warning.
func kubectl(t *testing.T, k *testenv.Kube, dir string, args ...string) string {
	t.Helper()
	stdout, stderr, err := run(t, k, dir, k.Kubectl, args...)
	what := "kubectl " + strings.Join(args, " ")
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, stderr)
	}
	noWarnings(t, what, stderr)
	return stdout
}

// run runs a command in dir against k within commandWait.
func run(t *testing.T, k *testenv.Kube, dir, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, k.Env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v (it takes about a second)\n%s", name, strings.Join(args, " "), commandWait, e.String())
	}
	return o.String(), e.String(), err
}

func noWarnings(t *testing.T, what, stderr string) {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "Warning:") {
			t.Errorf("%s: the API server warned: %s", what, line)
		}
	}
}

// stored reads back from the server every object of the kinds that want has, in the namespace
// (or, cluster-scoped, by want's names), decoded as render decodes; and their resourceVersions.
func stored(t *testing.T, k *testenv.Kube, want *objects) (*objects, map[string]string) {
	t.Helper()
	kinds, names := map[string]bool{}, map[string]bool{}
	for _, n := range want.names {
		kinds[strings.ToLower(strings.SplitN(n, "/", 2)[0])] = true
		names[n] = true
	}
	out := kubectl(t, k, ".", "-n", namespace, "get", strings.Join(sortedKeys(kinds), ","), "-o", "json")
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get: %v", err)
	}
	o, versions := newObjects(), map[string]string{}
	for _, item := range list.Items {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name, Namespace, ResourceVersion string
			} `json:"metadata"`
		}
		if err := json.Unmarshal(item, &meta); err != nil {
			t.Fatal(err)
		}
		name := meta.Kind + "/" + meta.Metadata.Name
		if meta.Metadata.Namespace == "" && !names[name] {
			continue // a cluster-scoped object of someone else's, such as Namespace/default
		}
		o.add(t, meta.Kind, meta.Metadata.Name, meta.Metadata.Namespace, item, yaml.Unmarshal)
		versions[name] = meta.Metadata.ResourceVersion
	}
	sort.Strings(o.names)
	return o, versions
}

// copyManifests copies k8s/ into a directory of the server's, which then stands for the
// repository root: a test may change a setting there as the README asks users to.
func copyManifests(t *testing.T, k *testenv.Kube) string {
	t.Helper()
	root := filepath.Join(k.Dir(), "repo")
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		to := filepath.Join(root, "k8s", path)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy k8s/: %v", err)
	}
	return root
}

var eventCount = regexp.MustCompile(`(?m)^(\s+count:\s*)\d+\s*$`)

// setEventReplicas sets the count under replicas: in root's k8s/kustomization.yaml, as the README
// asks before an event.
func setEventReplicas(t *testing.T, root string, n int) {
	t.Helper()
	p := filepath.Join(root, "k8s", "kustomization.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if c := len(eventCount.FindAll(b, -1)); c != 1 {
		t.Fatalf("k8s/kustomization.yaml: want one replicas count (the README's knob for an event), found %d", c)
	}
	b = eventCount.ReplaceAll(b, []byte(fmt.Sprintf("${1}%d", n)))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// expect checks the Deployment's stored replica count and whether an HPA exists, once the watch
// has seen the Deployment's current version; returns the Deployment.
func expect(t *testing.T, k *testenv.Kube, w *deploymentWatch, replicas int32, hpa bool, when string) *appsv1.Deployment {
	t.Helper()
	d := current(t, k, w)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas {
		t.Errorf("%s: coupon-api has %s replicas, want %d", when, count(d.Spec.Replicas), replicas)
	}
	if got := hasHPA(t, k); got != hpa {
		t.Errorf("%s: HPA present = %v, want %v", when, got, hpa)
	}
	return d
}

func hasHPA(t *testing.T, k *testenv.Kube) bool {
	t.Helper()
	return strings.TrimSpace(kubectl(t, k, ".", "-n", namespace, "get", "hpa", "-o", "name")) != ""
}

// current reads the Deployment and waits until the watch has seen that version, so that the
// watch holds every version stored so far.
func current(t *testing.T, k *testenv.Kube, w *deploymentWatch) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := json.Unmarshal([]byte(kubectl(t, k, ".", "-n", namespace, "get", "deployment", w.name, "-o", "json", "--show-managed-fields")), &d); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "the watch to deliver Deployment "+w.name+" version "+d.ResourceVersion, func() bool {
		return w.has(d.ResourceVersion)
	})
	return &d
}

// replicasOwners lists the field managers (manager/operation) that own spec.replicas.
func replicasOwners(t *testing.T, d *appsv1.Deployment) []string {
	t.Helper()
	var owners []string
	for _, mf := range d.ManagedFields {
		if mf.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Spec map[string]json.RawMessage `json:"f:spec"`
		}
		if err := json.Unmarshal(mf.FieldsV1.Raw, &fields); err != nil {
			t.Fatalf("managedFields of %s: %v", mf.Manager, err)
		}
		if _, ok := fields.Spec["f:replicas"]; ok {
			owners = append(owners, mf.Manager+"/"+string(mf.Operation))
		}
	}
	return owners
}

// deploymentWatch records every version of a Deployment that the server stores, from before it
// is created (a watch from the list's resourceVersion delivers every change, in order).
type deploymentWatch struct {
	name     string
	mu       sync.Mutex
	versions []storedVersion
	err      error
}

type storedVersion struct {
	event, resourceVersion string
	replicas               *int32
}

func watchDeployment(t *testing.T, k *testenv.Kube, name string) *deploymentWatch {
	t.Helper()
	w := &deploymentWatch{name: name}
	client := k.HTTPClient()
	base := k.URL + "/apis/apps/v1/namespaces/" + namespace + "/deployments"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base, nil)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("list deployments: %v", err)
	}
	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	cancel()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list deployments: %s %v", resp.Status, err)
	}

	// The watch lasts the test: its context ends in Cleanup, which waits for the reader.
	wctx, stop := context.WithCancel(context.Background())
	q := url.Values{"watch": {"true"}, "resourceVersion": {list.Metadata.ResourceVersion},
		"fieldSelector": {"metadata.name=" + name}}
	req, _ = http.NewRequestWithContext(wctx, http.MethodGet, base+"?"+q.Encode(), nil)
	resp, err = client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		stop()
		t.Fatalf("watch deployments: %v %v", err, resp)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var ev struct {
				Type   string             `json:"type"`
				Object *appsv1.Deployment `json:"object"`
			}
			err := dec.Decode(&ev)
			w.mu.Lock()
			if err != nil {
				if wctx.Err() == nil && !errors.Is(err, io.EOF) {
					w.err = err
				} else if wctx.Err() == nil {
					w.err = errors.New("the server ended the watch")
				}
				w.mu.Unlock()
				return
			}
			w.versions = append(w.versions, storedVersion{ev.Type, ev.Object.ResourceVersion, ev.Object.Spec.Replicas})
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("the watch of Deployment %s did not end within 10s of its cancellation", name)
		}
	})
	return w
}

func count(replicas *int32) string {
	if replicas == nil {
		return "unset"
	}
	return fmt.Sprint(*replicas)
}

func (w *deploymentWatch) has(resourceVersion string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.ContainsFunc(w.versions, func(v storedVersion) bool { return v.resourceVersion == resourceVersion })
}

// fewest is the fewest replicas any stored version had (0 for a version without the field).
func (w *deploymentWatch) fewest() int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	fewest := int32(1 << 30)
	for _, v := range w.versions {
		r := int32(0)
		if v.replicas != nil {
			r = *v.replicas
		}
		fewest = min(fewest, r)
	}
	return fewest
}

// check fails the test if the watch broke or any stored version had fewer than atLeast replicas.
func (w *deploymentWatch) check(t *testing.T, atLeast int32) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Errorf("the watch of Deployment %s broke: %v: the versions below may be incomplete", w.name, w.err)
	}
	var seen []string
	for _, v := range w.versions {
		r := count(v.replicas)
		seen = append(seen, fmt.Sprintf("%s@%s:%s", v.event, v.resourceVersion, r))
		if v.replicas == nil || *v.replicas < atLeast {
			t.Errorf("Deployment %s version %s (%s) was stored with %s replicas, want at least %d", w.name, v.resourceVersion, v.event, r, atLeast)
		}
	}
	if len(w.versions) == 0 {
		t.Errorf("the watch of Deployment %s saw no version at all", w.name)
	}
	t.Logf("every stored version of Deployment %s (event@resourceVersion:replicas): %s", w.name, strings.Join(seen, " "))
}
