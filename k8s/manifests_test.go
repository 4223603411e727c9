package k8s

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"couponsvc/internal/testenv"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const namespace = "coupon"

// objects is a rendered kustomization, decoded.
type objects struct {
	namespaces   []*corev1.Namespace
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	ingresses    []*networkingv1.Ingress
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	netpols      []*networkingv1.NetworkPolicy
	names        []string // kind/name of every object, sorted
}

// render builds the kustomization in dir with kustomize's Go API (no kubectl needed) and decodes
// every object strictly: a field the Kubernetes type does not have (a typo, a wrong level) fails.
func render(t *testing.T, dir string) *objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	o := newObjects()
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", r.CurId(), err)
		}
		o.add(t, r.GetKind(), r.GetName(), r.GetNamespace(), y, yaml.UnmarshalStrict)
	}
	sort.Strings(o.names)
	return o
}

func newObjects() *objects {
	return &objects{
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, deployments: map[string]*appsv1.Deployment{},
		statefulSets: map[string]*appsv1.StatefulSet{},
	}
}

// add decodes one object (YAML or JSON) with decode into its Kubernetes type; the caller sorts
// o.names once all are added.
func (o *objects) add(t *testing.T, kind, name, ns string, y []byte, decode func([]byte, any, ...yaml.JSONOpt) error) {
	t.Helper()
	o.names = append(o.names, kind+"/"+name)
	if kind != "Namespace" && ns != namespace {
		t.Errorf("%s/%s: namespace %q, want %q", kind, name, ns, namespace)
	}
	var obj any
	switch kind {
	case "Namespace":
		v := &corev1.Namespace{}
		o.namespaces, obj = append(o.namespaces, v), v
	case "ConfigMap":
		v := &corev1.ConfigMap{}
		o.configMaps[name], obj = v, v
	case "Secret":
		v := &corev1.Secret{}
		o.secrets[name], obj = v, v
	case "Service":
		v := &corev1.Service{}
		o.services[name], obj = v, v
	case "Deployment":
		v := &appsv1.Deployment{}
		o.deployments[name], obj = v, v
	case "StatefulSet":
		v := &appsv1.StatefulSet{}
		o.statefulSets[name], obj = v, v
	case "Ingress":
		v := &networkingv1.Ingress{}
		o.ingresses, obj = append(o.ingresses, v), v
	case "PodDisruptionBudget":
		v := &policyv1.PodDisruptionBudget{}
		o.pdbs, obj = append(o.pdbs, v), v
	case "HorizontalPodAutoscaler":
		v := &autoscalingv2.HorizontalPodAutoscaler{}
		o.hpas, obj = append(o.hpas, v), v
	case "NetworkPolicy":
		v := &networkingv1.NetworkPolicy{}
		o.netpols, obj = append(o.netpols, v), v
	default:
		t.Errorf("%s/%s: kind not known to this test; add it here", kind, name)
		return
	}
	if err := decode(y, obj); err != nil {
		t.Errorf("%s/%s does not decode into its Kubernetes type: %v\n%s", kind, name, err, y)
	}
}

// workload is a Deployment or StatefulSet, seen through what the checks need.
type workload struct {
	kind, name string
	replicas   *int32
	template   *corev1.PodTemplateSpec
}

func (o *objects) workloads() []workload {
	var out []workload
	for _, n := range sortedKeys(o.deployments) {
		d := o.deployments[n]
		out = append(out, workload{"Deployment", n, d.Spec.Replicas, &d.Spec.Template})
	}
	for _, n := range sortedKeys(o.statefulSets) {
		s := o.statefulSets[n]
		out = append(out, workload{"StatefulSet", n, s.Spec.Replicas, &s.Spec.Template})
	}
	return out
}

// selected lists the workloads whose pods the selector matches.
func (o *objects) selected(sel map[string]string) []workload {
	var out []workload
	if len(sel) == 0 {
		return nil
	}
	for _, w := range o.workloads() {
		if labels.SelectorFromSet(sel).Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// configMapName and secretName find a generated object by the name in the sources (kustomize
// appends a content hash).
func (o *objects) configMapName(t *testing.T, base string) string {
	t.Helper()
	for n := range o.configMaps {
		if n == base || strings.HasPrefix(n, base+"-") {
			return n
		}
	}
	t.Fatalf("no ConfigMap %s", base)
	return ""
}

func (o *objects) secretName(t *testing.T, base string) string {
	t.Helper()
	for n := range o.secrets {
		if n == base || strings.HasPrefix(n, base+"-") {
			return n
		}
	}
	t.Fatalf("no Secret %s", base)
	return ""
}

// TestEveryKustomization renders every kustomization under k8s/ (the event setup, the autoscale
// overlay and the base on its own; a new overlay is picked up by itself) and runs on each the
// checks that hold whatever the variant.
func TestEveryKustomization(t *testing.T) {
	dirs := kustomizations(t)
	for _, want := range []string{".", "base", "autoscale", "production"} {
		if !slices.Contains(dirs, want) {
			t.Errorf("no kustomization in %s (found %v)", want, dirs)
		}
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			o := render(t, dir)
			t.Logf("rendered: %s", strings.Join(o.names, " "))
			checkAll(t, o)
		})
	}
}

// checkAll runs every check that holds whatever the variant: on what a kustomization renders,
// and on what the API server stored of it (apiserver_test.go).
func checkAll(t *testing.T, o *objects) {
	t.Helper()
	if len(o.namespaces) != 1 || o.namespaces[0].Name != namespace {
		t.Errorf("want exactly the Namespace %q", namespace)
	}
	checkWorkloads(t, o)
	checkServices(t, o)
	checkIngress(t, o)
	checkNoInternalRoute(t, o)
	api := checkAPI(t, o)
	checkForwarding(t, o, api)
	checkRedis(t, o, api)
	checkPostgres(t, o)
	checkPDB(t, o, api)
	checkNetworkPolicies(t, o)
}

// kustomizations lists the directories under k8s/ that hold a kustomization, relative to k8s/.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == "monitoring" {
			// The Prometheus Operator's kinds, applied next to a setup: a Go module of its own
			// tests them against those types (k8s/monitoring, run by make test).
			return filepath.SkipDir
		}
		switch d.Name() {
		case "kustomization.yaml", "kustomization.yml", "Kustomization":
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	return dirs
}

// TestBase: what only the event setup (k8s/) must do, beyond TestEveryKustomization.
func TestBase(t *testing.T) {
	o := render(t, ".")
	if len(o.hpas) != 0 {
		t.Errorf("the event setup (k8s/) must not autoscale: pre-scale instead; the HPA belongs in k8s/autoscale")
	}
	if r := o.deployments["coupon-api"].Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("coupon-api replicas = %v, want 3", r)
	}
}

// TestDemoMode: the minikube demo (k8s/, k8s/autoscale) stays in demo mode with the demo
// coupons: no AUTH_* setting, SEED_DEMO_COUPONS=true.
func TestDemoMode(t *testing.T) {
	for _, dir := range []string{".", "autoscale"} {
		o := render(t, dir)
		env := apiEnvironment(t, o, o.deployments["coupon-api"].Spec.Template.Spec.Containers[0])
		for k := range env.values {
			if strings.HasPrefix(k, "AUTH_") {
				t.Errorf("%s: %s is set; the minikube demo runs in demo mode", dir, k)
			}
		}
		if env.values["SEED_DEMO_COUPONS"] != "true" {
			t.Errorf("%s: SEED_DEMO_COUPONS=%q, want true (the walk-through issues A0001)", dir, env.values["SEED_DEMO_COUPONS"])
		}
	}
}

// TestProduction: the production overlay is the base with identity mode on (every AUTH_*
// setting the service needs, a JWK Set over https, accepted by the service's own checks) and
// the demo coupons off; nothing else changes.
func TestProduction(t *testing.T) {
	o := render(t, "production")
	base := render(t, "base")
	// The same objects; the ConfigMap's name differs by its content hash.
	unhashed := func(names []string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = regexp.MustCompile(`^(ConfigMap/couponsvc-config)-[a-z0-9]+$`).ReplaceAllString(n, "$1")
		}
		return out
	}
	if !slices.Equal(unhashed(o.names), unhashed(base.names)) {
		t.Errorf("production renders %v, want the base's objects %v", o.names, base.names)
	}
	env := apiEnvironment(t, o, o.deployments["coupon-api"].Spec.Template.Spec.Containers[0])
	if env.values["SEED_DEMO_COUPONS"] != "false" {
		t.Errorf("SEED_DEMO_COUPONS=%q, want false", env.values["SEED_DEMO_COUPONS"])
	}
	for _, k := range []string{"AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_ALGORITHMS", "AUTH_CLOCK_SKEW", "AUTH_REDEEM_SCOPE"} {
		if env.values[k] == "" {
			t.Errorf("%s is not set: identity mode needs it", k)
		}
	}
	if u := env.values["AUTH_JWKS_URL"]; !strings.HasPrefix(u, "https://") {
		t.Errorf("AUTH_JWKS_URL %q: the keys must come over https", u)
	}
	if iss := env.values["AUTH_ISSUER"]; !strings.HasPrefix(env.values["AUTH_JWKS_URL"], strings.TrimSuffix(iss, "/")+"/") {
		t.Errorf("AUTH_JWKS_URL %q is not under AUTH_ISSUER %q (a provider publishes its keys under its issuer)", env.values["AUTH_JWKS_URL"], iss)
	}
	for _, a := range strings.Split(env.values["AUTH_ALGORITHMS"], ",") {
		if a = strings.TrimSpace(a); strings.HasPrefix(strings.ToUpper(a), "HS") || strings.EqualFold(a, "none") {
			t.Errorf("AUTH_ALGORITHMS allows %q", a)
		}
	}
	// Everything else is the base's.
	baseEnv := apiEnvironment(t, base, base.deployments["coupon-api"].Spec.Template.Spec.Containers[0])
	for k, v := range baseEnv.values {
		if k != "SEED_DEMO_COUPONS" && env.values[k] != v {
			t.Errorf("%s = %q, the base has %q", k, env.values[k], v)
		}
	}
}

func TestAutoscale(t *testing.T) {
	o := render(t, "autoscale")
	base := render(t, ".")
	want := append(slices.Clone(base.names), "HorizontalPodAutoscaler/coupon-api")
	sort.Strings(want)
	if !slices.Equal(o.names, want) {
		t.Errorf("autoscale renders %v, want the base plus the HPA: %v", o.names, want)
	}
	if len(o.hpas) != 1 {
		t.Fatalf("want one HPA, got %d", len(o.hpas))
	}
	h := o.hpas[0]
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || o.deployments[ref.Name] == nil || ref.Name != "coupon-api" {
		t.Errorf("HPA targets %s %s/%s, want the Deployment coupon-api", ref.APIVersion, ref.Kind, ref.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 3 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
		t.Errorf("HPA replicas %v..%d: keep at least 3 for the PDB and the quorum of pods", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	if r := o.deployments["coupon-api"].Spec.Replicas; r != nil {
		t.Errorf("with an HPA the Deployment must not set replicas (each apply would reset them), got %d", *r)
	}
}

// TestKubectlRendersTheSame renders with kubectl's own kustomize (the kubectl the API server test
// uses): the README's `kubectl apply -k` must see the same objects as the Go API above.
func TestKubectlRendersTheSame(t *testing.T) {
	kubectl := testenv.Kubectl(t)
	for _, dir := range []string{".", "autoscale", "production"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, kubectl, "kustomize", dir).Output()
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("kubectl kustomize %s did not finish within 1m (it renders offline in well under a second)", dir)
		}
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v", dir, err)
		}
		var got []string
		for _, doc := range bytes.Split(out, []byte("\n---\n")) {
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("kubectl kustomize %s: %v", dir, err)
			}
			got = append(got, meta.Kind+"/"+meta.Metadata.Name)
		}
		sort.Strings(got)
		if want := render(t, dir).names; !slices.Equal(got, want) {
			t.Errorf("kubectl kustomize %s renders %v, the Go API %v", dir, got, want)
		}
	}
}

// checkWorkloads: every container has probes, requests and limits, a pinned image; every pod
// runs as non-root without privilege escalation.
func checkWorkloads(t *testing.T, o *objects) {
	t.Helper()
	for _, w := range o.workloads() {
		spec := w.template.Spec
		if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s/%s: pod securityContext.runAsNonRoot must be true", w.kind, w.name)
		}
		if len(spec.InitContainers) > 0 && w.name != "coupon-api" {
			t.Errorf("%s/%s: init containers are not expected (only the API's migration)", w.kind, w.name)
		}
		for i, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			where := fmt.Sprintf("%s/%s container %s", w.kind, w.name, c.Name)
			if i >= len(spec.InitContainers) && (c.ReadinessProbe == nil || c.LivenessProbe == nil) {
				t.Errorf("%s: needs both a readinessProbe and a livenessProbe", where)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := c.Resources.Requests[res]
				lim, hasLim := c.Resources.Limits[res]
				if !hasReq || !hasLim {
					t.Errorf("%s: needs %s requests and limits", where, res)
				} else if req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %s above limit %s", where, res, req.String(), lim.String())
				}
			}
			if !pinned(c.Image) {
				t.Errorf("%s: image %q must be pinned by a tag other than latest (or a digest)", where, c.Image)
			}
			if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Errorf("%s: securityContext.allowPrivilegeEscalation must be false", where)
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if ref := e.ValueFrom.SecretKeyRef; ref != nil {
					s := o.secrets[ref.Name]
					if s == nil {
						t.Errorf("%s: env %s refers to Secret %q, which is not rendered", where, e.Name, ref.Name)
					} else if _, ok := s.Data[ref.Key]; !ok {
						t.Errorf("%s: env %s refers to key %q missing from Secret %s", where, e.Name, ref.Key, ref.Name)
					}
				}
				if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
					cm := o.configMaps[ref.Name]
					if cm == nil {
						t.Errorf("%s: env %s refers to ConfigMap %q, which is not rendered", where, e.Name, ref.Name)
					} else if _, ok := cm.Data[ref.Key]; !ok {
						t.Errorf("%s: env %s refers to key %q missing from ConfigMap %s", where, e.Name, ref.Key, ref.Name)
					}
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil && o.configMaps[ef.ConfigMapRef.Name] == nil {
					t.Errorf("%s: envFrom ConfigMap %q is not rendered", where, ef.ConfigMapRef.Name)
				}
				if ef.SecretRef != nil && o.secrets[ef.SecretRef.Name] == nil {
					t.Errorf("%s: envFrom Secret %q is not rendered", where, ef.SecretRef.Name)
				}
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
				if p != nil && p.HTTPGet != nil && p.HTTPGet.Port.Type == intstr.String && !hasPort(c, p.HTTPGet.Port.StrVal) {
					t.Errorf("%s: probe port %q is not a container port", where, p.HTTPGet.Port.StrVal)
				}
			}
		}
	}
}

func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon <= slash {
		return false
	}
	tag := image[colon+1:]
	return tag != "" && tag != "latest"
}

func hasPort(c corev1.Container, name string) bool {
	for _, p := range c.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

// checkServices: every Service selects the pods of exactly one workload and its target ports
// exist on them.
func checkServices(t *testing.T, o *objects) {
	t.Helper()
	for _, name := range sortedKeys(o.services) {
		svc := o.services[name]
		ws := o.selected(svc.Spec.Selector)
		if len(ws) != 1 {
			t.Errorf("Service %s selects %d workloads, want 1 (selector %v)", name, len(ws), svc.Spec.Selector)
			continue
		}
		w := ws[0]
		for _, p := range svc.Spec.Ports {
			if !targetExists(w.template.Spec.Containers, p) {
				t.Errorf("Service %s port %s: targetPort %s is not a container port of %s/%s", name, p.Name, p.TargetPort.String(), w.kind, w.name)
			}
		}
		if st := o.statefulSets[w.name]; w.kind == "StatefulSet" && (st.Spec.ServiceName != name || svc.Spec.ClusterIP != corev1.ClusterIPNone) {
			t.Errorf("StatefulSet %s: serviceName %q must name its headless Service %s (clusterIP None)", w.name, st.Spec.ServiceName, name)
		}
	}
}

func targetExists(cs []corev1.Container, p corev1.ServicePort) bool {
	for _, c := range cs {
		for _, cp := range c.Ports {
			switch {
			case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal == cp.Name,
				p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == cp.ContainerPort,
				p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 && p.Port == cp.ContainerPort:
				return true
			}
		}
	}
	return false
}

// checkIngress: ingress-nginx, /api/v1 and /swagger for host coupon.local and for any host, each
// backend an existing Service and port.
func checkIngress(t *testing.T, o *objects) {
	t.Helper()
	if len(o.ingresses) != 1 {
		t.Fatalf("want one Ingress, got %d", len(o.ingresses))
	}
	ing := o.ingresses[0]
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
		t.Errorf("Ingress %s: ingressClassName must be nginx (minikube addons enable ingress)", ing.Name)
	}
	routes := map[string]bool{} // host + path
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			t.Errorf("Ingress %s: rule for host %q has no http paths", ing.Name, rule.Host)
			continue
		}
		for _, p := range rule.HTTP.Paths {
			routes[rule.Host+p.Path] = true
			if p.PathType == nil || *p.PathType != networkingv1.PathTypePrefix {
				t.Errorf("Ingress %s: path %s%s must be pathType Prefix", ing.Name, rule.Host, p.Path)
			}
			b := p.Backend.Service
			if b == nil {
				t.Errorf("Ingress %s: path %s%s has no service backend", ing.Name, rule.Host, p.Path)
				continue
			}
			svc := o.services[b.Name]
			if svc == nil {
				t.Errorf("Ingress %s: path %s%s routes to Service %q, which is not rendered", ing.Name, rule.Host, p.Path, b.Name)
				continue
			}
			found := false
			for _, sp := range svc.Spec.Ports {
				if (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number) {
					found = true
				}
			}
			if !found {
				t.Errorf("Ingress %s: path %s%s routes to port %+v, which Service %s does not have", ing.Name, rule.Host, p.Path, b.Port, b.Name)
			}
			if ws := o.selected(svc.Spec.Selector); len(ws) != 1 || ws[0].name != "coupon-api" {
				t.Errorf("Ingress %s: path %s%s does not reach the API pods", ing.Name, rule.Host, p.Path)
			}
		}
	}
	// TLS for the named host, from a Secret (k8s/README.md makes a self-signed one for minikube).
	if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName == "" || !slices.Equal(ing.Spec.TLS[0].Hosts, []string{"coupon.local"}) {
		t.Errorf("Ingress %s: tls %+v; want coupon.local with a secretName", ing.Name, ing.Spec.TLS)
	}
	// Per-client limits (their 429 is the controller ConfigMap's limit-*-status-code).
	for _, k := range []string{"limit-rps", "limit-connections", "limit-burst-multiplier"} {
		v, err := strconv.Atoi(ing.Annotations["nginx.ingress.kubernetes.io/"+k])
		if err != nil || v < 1 {
			t.Errorf("Ingress %s: annotation nginx.ingress.kubernetes.io/%s = %q; want a positive integer", ing.Name, k, ing.Annotations["nginx.ingress.kubernetes.io/"+k])
		}
	}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			b := p.Backend.Service
			if b == nil || o.services[b.Name] == nil {
				continue
			}
			for _, sp := range o.services[b.Name].Spec.Ports {
				if (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number) {
					if sp.TargetPort.String() == "admin" || sp.TargetPort.IntValue() == 8081 {
						t.Errorf("Ingress %s: path %s%s reaches the admin listener", ing.Name, rule.Host, p.Path)
					}
				}
			}
		}
	}
	if svc := o.services["couponsvc-admin"]; svc == nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "admin" ||
		svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("no ClusterIP Service couponsvc-admin on the admin port alone (k8s/README.md port-forwards to it)")
	}
	for _, host := range []string{"coupon.local", ""} {
		for _, path := range []string{"/api/v1/coupons", "/api/v1/users", "/api/v1/wallet", "/swagger"} { // the public routes
			if !routes[host+path] {
				t.Errorf("Ingress %s: no route for host %q path %s", ing.Name, host, path)
			}
		}
	}
}

// apiEnv is the API container's environment: the ConfigMap's keys, then env (which wins).
type apiEnv struct {
	values    map[string]string         // literal values, ConfigMap values
	refs      map[string]*corev1.EnvVar // variables set from a Secret
	undefined []string                  // $(VAR) references to a variable not defined before them
}

// checkAPI: the API Deployment's container, configuration and Secret use; returns it.
func checkAPI(t *testing.T, o *objects) *appsv1.Deployment {
	t.Helper()
	d := o.deployments["coupon-api"]
	if d == nil {
		t.Fatalf("no Deployment coupon-api")
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("coupon-api: want one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	if !strings.HasPrefix(c.Image, "couponsvc:") {
		t.Errorf("coupon-api image %q, want couponsvc:<tag> (the image make image builds)", c.Image)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("coupon-api imagePullPolicy %q: IfNotPresent, so a `minikube image load`ed image is used", c.ImagePullPolicy)
	}
	if len(c.Command) != 0 || !slices.Equal(c.Args, []string{"serve"}) {
		t.Errorf("coupon-api: command %v args %v; want the image's entrypoint with args [serve]", c.Command, c.Args)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("coupon-api: readOnlyRootFilesystem must be true")
	}
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("coupon-api: container runAsNonRoot must be true")
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("coupon-api: capabilities must drop ALL")
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("coupon-api: readinessProbe must GET /readyz")
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("coupon-api: livenessProbe must GET /healthz")
	}

	// Graceful shutdown: preStop pause (the pod leaves the Service endpoints while it still
	// listens), then the API's drain, then the locks are released (the pod's coupons go to
	// other pods) and the process exits, all within the grace period, which counts from the start
	// of preStop. A kill before the release leaves the coupons to the watchdog lease instead.
	var pause int64
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Errorf("coupon-api: needs a preStop pause so the Ingress stops sending before SIGTERM")
	} else if s := c.Lifecycle.PreStop.Sleep; s == nil || s.Seconds < 1 {
		t.Errorf("coupon-api: preStop must be a sleep of at least 1 s (distroless: no shell for exec)")
	} else {
		pause = s.Seconds
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g < pause+drainSeconds+releaseMarginSeconds {
		got := "unset"
		if g != nil {
			got = strconv.FormatInt(*g, 10)
		}
		t.Errorf("coupon-api: terminationGracePeriodSeconds %s must be at least preStop %ds + the %d s drain + %d s to release the locks and exit",
			got, pause, drainSeconds, releaseMarginSeconds)
	}

	env := apiEnvironment(t, o, c)
	for _, k := range []string{"HTTP_ADDR", "DATABASE_URL", "REDIS_ADDRS", "REDIS_USERNAME", "LOCK_WAIT", "LOCK_LEASE", "SEED_DEMO_COUPONS", "MAX_INFLIGHT", "LOG_LEVEL"} {
		if _, ok := env.values[k]; !ok {
			if _, ok := env.refs[k]; !ok {
				t.Errorf("coupon-api: %s is not set", k)
			}
		}
	}
	// Every interface, not loopback: other pods forward to the pod IP (checkForwarding).
	if host, port, err := net.SplitHostPort(env.values["HTTP_ADDR"]); err != nil || port != strconv.Itoa(int(c.Ports[0].ContainerPort)) ||
		(host != "" && host != "0.0.0.0" && host != "::") {
		t.Errorf("coupon-api: HTTP_ADDR %q does not listen on every interface at the container port %d", env.values["HTTP_ADDR"], c.Ports[0].ContainerPort)
	}

	// The API serves as the runtime role (Secret coupon-db-runtime), never as the superuser, and
	// does not migrate: the init container does, as the migration role (coupon-db-migrator).
	checkDatabaseURL(t, o, "coupon-api", env, "coupon-db-runtime")
	if env.values["MIGRATE_ON_START"] != "false" {
		t.Errorf("coupon-api: MIGRATE_ON_START=%q; the runtime role may not change the schema: want false", env.values["MIGRATE_ON_START"])
	}
	if len(spec.InitContainers) != 1 {
		t.Errorf("coupon-api: want one init container (couponsvc migrate), got %d", len(spec.InitContainers))
	} else {
		ic := spec.InitContainers[0]
		if ic.Image != c.Image || !slices.Equal(ic.Args, []string{"migrate"}) || len(ic.Command) != 0 {
			t.Errorf("coupon-api init container: image %q args %v; want the API's image %q with args [migrate]", ic.Image, ic.Args, c.Image)
		}
		ienv := apiEnvironment(t, o, ic)
		checkDatabaseURL(t, o, "coupon-api init container", ienv, "coupon-db-migrator")
		if ienv.values["ADMIN_ADDR"] != "" {
			t.Errorf("coupon-api init container: ADMIN_ADDR %q: the migration serves nothing (and has no ADMIN_TOKEN)", ienv.values["ADMIN_ADDR"])
		}
	}
	for _, w := range o.workloads() {
		if w.name == "postgres" {
			continue
		}
		for _, wc := range append(slices.Clone(w.template.Spec.InitContainers), w.template.Spec.Containers...) {
			for _, e := range wc.Env {
				if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && strings.HasPrefix(ref.SecretKeyRef.Name, "postgres-credentials") {
					t.Errorf("%s/%s container %s: env %s comes from the PostgreSQL superuser's Secret", w.kind, w.name, wc.Name, e.Name)
				}
			}
		}
	}

	// Every secret value comes from its Secret by reference, never inlined.
	for _, sname := range sortedKeys(o.secrets) {
		for key, val := range o.secrets[sname].Data {
			secret := string(val)
			if len(secret) < 8 || key == "DB_USER" || key == "POSTGRES_USER" {
				continue
			}
			for _, w := range o.workloads() {
				for _, wc := range append(slices.Clone(w.template.Spec.InitContainers), w.template.Spec.Containers...) {
					for _, e := range wc.Env {
						if strings.Contains(e.Value, secret) {
							t.Errorf("%s/%s: env %s inlines %s's %s; reference the Secret", w.kind, w.name, e.Name, sname, key)
						}
					}
				}
			}
			for _, cm := range o.configMaps {
				for k, v := range cm.Data {
					if strings.Contains(v, secret) {
						t.Errorf("ConfigMap %s key %s holds %s's %s; it belongs in the Secret", cm.Name, k, sname, key)
					}
				}
			}
		}
	}

	// The admin routes: the token from its Secret, their own listener on a port of its own.
	tokenSecret := o.secretName(t, "couponsvc-admin-token")
	if tok := env.refs["ADMIN_TOKEN"]; tok == nil || tok.ValueFrom.SecretKeyRef == nil || tok.ValueFrom.SecretKeyRef.Name != tokenSecret {
		t.Errorf("coupon-api: ADMIN_TOKEN must come from Secret %s by secretKeyRef", tokenSecret)
	} else if v := o.secrets[tokenSecret].Data[tok.ValueFrom.SecretKeyRef.Key]; len(v) < 32 {
		t.Errorf("Secret %s: ADMIN_TOKEN of %d characters; the API refuses fewer than 32", tokenSecret, len(v))
	}
	_, adminPort, err := net.SplitHostPort(env.values["ADMIN_ADDR"])
	if err != nil || adminPort == "" {
		t.Errorf("coupon-api: ADMIN_ADDR %q: want :PORT, the admin routes' own listener", env.values["ADMIN_ADDR"])
	}
	if p := containerPort(c, "admin"); p == nil || strconv.Itoa(int(p.ContainerPort)) != adminPort {
		t.Errorf("coupon-api: ADMIN_ADDR %q is not the container port named admin (%+v)", env.values["ADMIN_ADDR"], p)
	} else if http := containerPort(c, "http"); http != nil && http.ContainerPort == p.ContainerPort {
		t.Errorf("coupon-api: the admin port is the API port %d", p.ContainerPort)
	}
	if len(env.undefined) > 0 {
		t.Errorf("coupon-api: variables used before they are defined (Kubernetes leaves them as text): %v", env.undefined)
	}
	return d
}

func containerPort(c corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

// checkDatabaseURL: DATABASE_URL names the in-cluster PostgreSQL with the user and password of
// the Secret secret (by reference), and an sslmode from the ConfigMap.
func checkDatabaseURL(t *testing.T, o *objects, who string, env apiEnv, secret string) {
	t.Helper()
	name := o.secretName(t, secret)
	for _, v := range []string{"DB_USER", "DB_PASSWORD"} {
		ref := env.refs[v]
		if ref == nil || ref.ValueFrom.SecretKeyRef == nil || ref.ValueFrom.SecretKeyRef.Name != name || ref.ValueFrom.SecretKeyRef.Key != v {
			t.Errorf("%s: %s must come from Secret %s by secretKeyRef", who, v, name)
		}
	}
	raw := env.values["DATABASE_URL"]
	if !strings.Contains(raw, "$(DB_USER):$(DB_PASSWORD)@") {
		t.Errorf("%s: DATABASE_URL %q must take the role and its password as $(DB_USER):$(DB_PASSWORD)", who, raw)
	}
	dbURL := expand(raw, env.values)
	if !strings.HasPrefix(dbURL, "postgres://") || !strings.Contains(dbURL, "@postgres:5432/coupon?") || !strings.Contains(dbURL, "sslmode=disable") {
		t.Errorf("%s: DATABASE_URL expands to %q, want postgres://USER:PASSWORD@postgres:5432/coupon?sslmode=disable (in-cluster)", who, dbURL)
	}
}

const (
	drainSeconds         = 10           // the README: SIGTERM finishes in-flight requests for up to 10 s
	releaseMarginSeconds = 2            // then stop background work, release the locks, exit
	internalPrefix       = "/internal/" // pod-to-pod forwarding; never reachable from outside
)

// checkForwarding: what pod-to-pod forwarding to a coupon's owner needs. Each pod advertises
// ADVERTISE_ADDR=$(POD_IP):<API port> in the lock values it holds; the other pods connect to that
// address directly (the Kubernetes network model: every pod reaches every pod IP), so it must be
// this pod's own IP, from the downward API, and the port the API listens on.
func checkForwarding(t *testing.T, o *objects, api *appsv1.Deployment) {
	t.Helper()
	spec := api.Spec.Template.Spec
	c := spec.Containers[0]
	if spec.HostNetwork {
		t.Errorf("coupon-api: hostNetwork would make the pod IP the node's, shared by the pods on it")
	}
	var port *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == "http" {
			port = &c.Ports[i]
		}
	}
	if port == nil || port.ContainerPort == 0 || (port.Protocol != "" && port.Protocol != corev1.ProtocolTCP) {
		t.Fatalf("coupon-api: needs a TCP container port named http (the API and the forwarded requests), got %+v", c.Ports)
	}
	apiPort := strconv.Itoa(int(port.ContainerPort))

	// The order (POD_IP first) is checkAPI's: every $(VAR) is defined before use.
	podIP, advertise := false, false
	for _, e := range c.Env {
		switch e.Name {
		case "POD_IP":
			podIP = true
			if f := e.ValueFrom; f == nil || f.FieldRef == nil || f.FieldRef.FieldPath != "status.podIP" ||
				(f.FieldRef.APIVersion != "" && f.FieldRef.APIVersion != "v1") || e.Value != "" {
				t.Errorf("coupon-api: POD_IP must come from the downward API, fieldRef status.podIP; got %+v", e)
			}
		case "ADVERTISE_ADDR":
			advertise = true
			if e.ValueFrom != nil {
				t.Errorf("coupon-api: ADVERTISE_ADDR must be the literal $(POD_IP):%s, not a reference", apiPort)
				continue
			}
			host, p, err := net.SplitHostPort(e.Value)
			if err != nil || host != "$(POD_IP)" {
				t.Errorf("coupon-api: ADVERTISE_ADDR %q must be $(POD_IP):%s (this pod's own IP)", e.Value, apiPort)
			}
			if err == nil && p != apiPort {
				t.Errorf("coupon-api: ADVERTISE_ADDR %q: port %s, but the API listens on container port %s", e.Value, p, apiPort)
			}
		}
	}
	if !podIP {
		t.Errorf("coupon-api: no POD_IP (fieldRef status.podIP)")
	}
	if !advertise {
		t.Errorf("coupon-api: no ADVERTISE_ADDR: the default is derived from HTTP_ADDR or the host, not the pod IP")
	}
	// envFrom values are the same for every pod and never expanded: the address cannot live there.
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil || o.configMaps[ef.ConfigMapRef.Name] == nil {
			continue
		}
		for _, k := range []string{"ADVERTISE_ADDR", "POD_IP"} {
			if _, ok := o.configMaps[ef.ConfigMapRef.Name].Data[k]; ok {
				t.Errorf("ConfigMap %s sets %s: it is per pod, set it in the container's env", ef.ConfigMapRef.Name, k)
			}
		}
	}
}

// checkNoInternalRoute: no Ingress path leads to the pod-to-pod routes under /internal/. Prefix
// and ImplementationSpecific paths are taken as plain string prefixes (ingress-nginx's
// locations), which errs on the strict side; matching is case-insensitive for the same reason.
//
// This is a check of the Ingress's routing, which matches the normalized path. ingress-nginx
// forwards the request URI as the client sent it, so a crafted path such as
// /internal/v1/x/..%2F..%2F..%2Fapi%2Fv1/y matches /api/v1 and still arrives with /internal/v1/
// in front: the /internal/ handlers must authenticate their callers, not rely on this.
func checkNoInternalRoute(t *testing.T, o *objects) {
	t.Helper()
	for _, ing := range o.ingresses {
		if ing.Spec.DefaultBackend != nil {
			t.Errorf("Ingress %s: a defaultBackend receives every unmatched path, %s included", ing.Name, internalPrefix)
		}
		for k := range ing.Annotations {
			switch strings.TrimPrefix(k, "nginx.ingress.kubernetes.io/") {
			case "rewrite-target", "use-regex", "app-root", "configuration-snippet", "server-snippet":
				t.Errorf("Ingress %s: annotation %s changes how paths map to the API; extend checkNoInternalRoute before using it", ing.Name, k)
			}
		}
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for _, p := range rule.HTTP.Paths {
				if routesInternal(p.PathType, p.Path) {
					t.Errorf("Ingress %s: path %q (host %q) reaches %s, the pod-to-pod routes", ing.Name, p.Path, rule.Host, internalPrefix)
				}
				for _, private := range []string{"/api/v1/admin/", "/metrics/"} {
					if routesUnder(p.PathType, p.Path, private) {
						t.Errorf("Ingress %s: path %q (host %q) reaches %s, which is not public", ing.Name, p.Path, rule.Host, strings.TrimSuffix(private, "/"))
					}
				}
			}
		}
	}
}

// routesInternal reports whether an Ingress path of the given type can match a path under
// internalPrefix.
func routesInternal(pt *networkingv1.PathType, path string) bool {
	return routesUnder(pt, path, internalPrefix)
}

// routesUnder reports whether an Ingress path of the given type can match a request path under
// prefix (which ends with "/"). An exact path matches itself only; any other may match every
// path that begins with it, so "", "/", "/i" and "/internal/v1" all reach "/internal/".
func routesUnder(pt *networkingv1.PathType, path, prefix string) bool {
	path = strings.ToLower(path)
	inside := strings.HasPrefix(path, strings.TrimSuffix(prefix, "/"))
	if pt != nil && *pt == networkingv1.PathTypeExact {
		return inside
	}
	return inside || strings.HasPrefix(prefix, path)
}

func TestRoutesInternal(t *testing.T) {
	prefix, exact, impl := networkingv1.PathTypePrefix, networkingv1.PathTypeExact, networkingv1.PathTypeImplementationSpecific
	for _, c := range []struct {
		pt   *networkingv1.PathType
		path string
		want bool
	}{
		{&prefix, "/", true}, {&prefix, "/internal", true}, {&prefix, "/internal/", true},
		{&prefix, "/internal/v1", true}, {&prefix, "/Internal", true}, {&prefix, "/int", true},
		{&impl, "", true}, {&impl, "/", true}, {nil, "/internal/v1/forward", true},
		{&exact, "/internal/v1/coupons", true}, {&exact, "/", false},
		{&prefix, "/api/v1", false}, {&prefix, "/swagger", false}, {&impl, "/api/v1", false},
		{&prefix, "/api/v1/internal", false},
	} {
		if got := routesInternal(c.pt, c.path); got != c.want {
			pt := "nil"
			if c.pt != nil {
				pt = string(*c.pt)
			}
			t.Errorf("routesInternal(%s, %q) = %v, want %v", pt, c.path, got, c.want)
		}
	}
}

// apiEnvironment resolves the container's environment as the kubelet does (envFrom first, then
// env in order); values from a Secret stay references.
func apiEnvironment(t *testing.T, o *objects, c corev1.Container) apiEnv {
	t.Helper()
	env := apiEnv{values: map[string]string{}, refs: map[string]*corev1.EnvVar{}}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			if cm := o.configMaps[ef.ConfigMapRef.Name]; cm != nil {
				for k, v := range cm.Data {
					env.values[k] = v
				}
			}
		}
	}
	for i := range c.Env {
		e := &c.Env[i]
		switch {
		case e.ValueFrom == nil:
			for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
				if _, ok := env.values[m[1]]; !ok {
					env.undefined = append(env.undefined, e.Name+": "+m[0])
				}
			}
			env.values[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil && o.configMaps[e.ValueFrom.ConfigMapKeyRef.Name] != nil:
			env.values[e.Name] = o.configMaps[e.ValueFrom.ConfigMapKeyRef.Name].Data[e.ValueFrom.ConfigMapKeyRef.Key]
		default:
			delete(env.values, e.Name)
			env.refs[e.Name] = e
			env.values[e.Name] = "$(" + e.Name + ")" // stands for itself in expansions
		}
	}
	return env
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) as Kubernetes does for variables it knows; unknown ones stay.
func expand(s string, vars map[string]string) string {
	for k, v := range vars {
		if v != "$("+k+")" {
			s = strings.ReplaceAll(s, "$("+k+")", v)
		}
	}
	return s
}

// checkRedis: REDIS_ADDRS lists exactly three Redis Services, each in front of its own
// single-pod Redis workload: independent nodes for the Redlock quorum, not replicas.
func checkRedis(t *testing.T, o *objects, api *appsv1.Deployment) {
	t.Helper()
	env := apiEnvironment(t, o, api.Spec.Template.Spec.Containers[0])
	addrs := strings.Split(env.values["REDIS_ADDRS"], ",")
	if len(addrs) != 3 {
		t.Fatalf("REDIS_ADDRS %q: want exactly three nodes", env.values["REDIS_ADDRS"])
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(strings.TrimSpace(a))
		if err != nil {
			t.Errorf("REDIS_ADDRS entry %q: %v", a, err)
			continue
		}
		svc := o.services[host]
		if svc == nil {
			t.Errorf("REDIS_ADDRS entry %q: no Service %s", a, host)
			continue
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
			t.Errorf("REDIS_ADDRS entry %q: Service %s has no port %s", a, host, port)
		}
		ws := o.selected(svc.Spec.Selector)
		if len(ws) != 1 {
			t.Errorf("Service %s selects %d workloads, want its own single Redis", host, len(ws))
			continue
		}
		w := ws[0]
		if seen[w.name] {
			t.Errorf("REDIS_ADDRS: two entries reach %s/%s; the nodes must be independent", w.kind, w.name)
		}
		seen[w.name] = true
		if w.replicas == nil || *w.replicas != 1 {
			t.Errorf("%s/%s: replicas %v, want 1 (one independent node per Service)", w.kind, w.name, w.replicas)
		}
		img := w.template.Spec.Containers[0].Image
		if !strings.HasPrefix(img, "redis:") {
			t.Errorf("%s/%s: image %q is not Redis", w.kind, w.name, img)
		}
		// The node refuses clients without the password the API has (anything else in the
		// cluster could take locks or publish notices), gives that password to an ACL user
		// limited to the lock's keys and the service's channels (the arguments the root
		// package's TestRedisACLUser runs real nodes with), and runs a patched Redis.
		const acl = "--user default off --user couponsvc on >$(REDIS_PASSWORD) ~lock:* &lock:* &couponsvc:* +@all -@dangerous -@admin"
		if args := strings.Join(w.template.Spec.Containers[0].Args, " "); !strings.HasSuffix(args, acl) {
			t.Errorf("%s/%s: args %q: want them to end with the ACL %q", w.kind, w.name, args, acl)
		}
		if !slices.ContainsFunc(w.template.Spec.Containers[0].Env, func(e corev1.EnvVar) bool {
			return e.Name == "REDIS_PASSWORD" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}) {
			t.Errorf("%s/%s: REDIS_PASSWORD does not come from a Secret", w.kind, w.name)
		}
		if v, ok := strings.CutPrefix(img, "redis:7.4."); ok {
			if patch, _ := strconv.Atoi(strings.TrimSuffix(v, "-alpine")); patch < 6 {
				t.Errorf("%s/%s: %s has CVE-2025-49844 (fixed in 7.4.6)", w.kind, w.name, img)
			}
		}
		for _, arg := range w.template.Spec.Containers[0].Args {
			if strings.Contains(arg, "replicaof") || strings.Contains(arg, "slaveof") || strings.Contains(arg, "sentinel") {
				t.Errorf("%s/%s: %q: the Redlock nodes must not replicate each other", w.kind, w.name, arg)
			}
		}
	}
}

// checkPostgres: a StatefulSet with a volume claim, credentials from the Secret, pg_isready.
func checkPostgres(t *testing.T, o *objects) {
	t.Helper()
	s := o.statefulSets["postgres"]
	if s == nil {
		t.Fatalf("no StatefulSet postgres")
	}
	if len(s.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("StatefulSet postgres: needs a volumeClaimTemplate (its data must outlive the pod)")
	}
	c := s.Spec.Template.Spec.Containers[0]
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range s.Spec.VolumeClaimTemplates {
			if m.Name == v.Name && strings.HasPrefix(m.MountPath, "/var/lib/postgresql") {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("StatefulSet postgres: the claim is not mounted at /var/lib/postgresql/...")
	}
	p := c.ReadinessProbe
	if p == nil || p.Exec == nil || !strings.Contains(strings.Join(p.Exec.Command, " "), "pg_isready") {
		t.Errorf("StatefulSet postgres: readiness must run pg_isready")
	}
	secret := o.secretName(t, "postgres-credentials")
	for _, name := range []string{"POSTGRES_USER", "POSTGRES_PASSWORD"} {
		ok := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == secret
		})
		if !ok {
			t.Errorf("StatefulSet postgres: %s must come from Secret %s", name, secret)
		}
	}
	db := ""
	for _, e := range c.Env {
		if e.Name == "POSTGRES_DB" && e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
			db = o.configMaps[e.ValueFrom.ConfigMapKeyRef.Name].Data[e.ValueFrom.ConfigMapKeyRef.Key]
		} else if e.Name == "POSTGRES_DB" {
			db = e.Value
		}
	}
	if db != "coupon" {
		t.Errorf("StatefulSet postgres: POSTGRES_DB %q, want coupon", db)
	}

	// The roles: the init script the service's roles_test.go runs against a real PostgreSQL,
	// mounted where the image runs it on an empty volume, with the roles' Secrets.
	script, err := os.ReadFile("base/postgres-init/10-roles.sh")
	if err != nil {
		t.Fatal(err)
	}
	mounted = false
	for _, m := range c.VolumeMounts {
		if m.MountPath != "/docker-entrypoint-initdb.d" {
			continue
		}
		for _, v := range s.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm := o.configMaps[v.ConfigMap.Name]
			if cm == nil || cm.Data["10-roles.sh"] != string(script) {
				t.Errorf("StatefulSet postgres: ConfigMap %s at /docker-entrypoint-initdb.d lacks base/postgres-init/10-roles.sh as it is", v.ConfigMap.Name)
			}
			if v.ConfigMap.DefaultMode == nil || *v.ConfigMap.DefaultMode&0o111 == 0 {
				t.Errorf("StatefulSet postgres: the init scripts must be executable (defaultMode)")
			}
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("StatefulSet postgres: no ConfigMap mounted at /docker-entrypoint-initdb.d (the roles' init script)")
	}
	for env, secret := range map[string]string{
		"COUPON_MIGRATOR_USER": "coupon-db-migrator", "COUPON_MIGRATOR_PASSWORD": "coupon-db-migrator",
		"COUPON_RUNTIME_USER": "coupon-db-runtime", "COUPON_RUNTIME_PASSWORD": "coupon-db-runtime",
	} {
		name := o.secretName(t, secret)
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == env && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == name
		}) {
			t.Errorf("StatefulSet postgres: %s must come from Secret %s (the role the API uses)", env, name)
		}
	}
}

// checkPDB: the API's PodDisruptionBudget selects its pods and leaves room to evict one.
func checkPDB(t *testing.T, o *objects, api *appsv1.Deployment) {
	t.Helper()
	for _, p := range o.pdbs {
		sel, err := metav1LabelSelector(p)
		if err != nil {
			t.Errorf("PDB %s: %v", p.Name, err)
			continue
		}
		if !sel.Matches(labels.Set(api.Spec.Template.Labels)) {
			continue
		}
		if p.Spec.MinAvailable == nil || p.Spec.MinAvailable.Type != intstr.Int {
			t.Errorf("PDB %s: want an integer minAvailable", p.Name)
			return
		}
		// With an HPA, the fewest replicas are its minimum: the Deployment's own count is the
		// HPA's to set (the server stores the default, 1, until the HPA first scales it).
		replicas, from := api.Spec.Replicas, "replicas"
		for _, h := range o.hpas {
			if ref := h.Spec.ScaleTargetRef; ref.Kind == "Deployment" && ref.Name == api.Name {
				replicas, from = h.Spec.MinReplicas, "HPA minReplicas"
			}
		}
		if replicas != nil && p.Spec.MinAvailable.IntValue() >= int(*replicas) {
			t.Errorf("PDB %s: minAvailable %d with %d %s blocks every drain", p.Name, p.Spec.MinAvailable.IntValue(), *replicas, from)
		}
		return
	}
	t.Errorf("no PodDisruptionBudget selects the coupon-api pods")
}

func metav1LabelSelector(p *policyv1.PodDisruptionBudget) (labels.Selector, error) {
	if p.Spec.Selector == nil || len(p.Spec.Selector.MatchExpressions) > 0 {
		return nil, fmt.Errorf("want a matchLabels selector")
	}
	return labels.SelectorFromSet(p.Spec.Selector.MatchLabels), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestRoutesUnder(t *testing.T) {
	prefix, exact := networkingv1.PathTypePrefix, networkingv1.PathTypeExact
	for _, c := range []struct {
		pt         *networkingv1.PathType
		path, root string
		want       bool
	}{
		{&prefix, "/api/v1", "/api/v1/admin/", true}, {&prefix, "/api", "/api/v1/admin/", true},
		{&prefix, "/api/v1/admin", "/api/v1/admin/", true}, {&exact, "/api/v1/admin/coupons", "/api/v1/admin/", true},
		{&prefix, "/api/v1/coupons", "/api/v1/admin/", false}, {&prefix, "/api/v1/wallet", "/api/v1/admin/", false},
		{&prefix, "/", "/metrics/", true}, {&prefix, "/metrics", "/metrics/", true}, {&prefix, "/swagger", "/metrics/", false},
	} {
		if got := routesUnder(c.pt, c.path, c.root); got != c.want {
			t.Errorf("routesUnder(%s, %q, %q) = %v, want %v", *c.pt, c.path, c.root, got, c.want)
		}
	}
}

// peer is a connection's source for the NetworkPolicy check: a pod of a namespace, with labels.
type peer struct {
	ns     string
	labels map[string]string
}

// allowed evaluates the NetworkPolicies as a CNI that enforces them would: a connection from p to
// workload w's port is allowed when no policy selects w's pods, or when a rule of one that does
// admits p on that port (a named port resolves to w's container port).
func (o *objects) allowed(p peer, w workload, port int32) bool {
	selecting := false
	for _, np := range o.netpols {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(w.template.Labels)) {
			continue
		}
		selecting = true
		for _, rule := range np.Spec.Ingress {
			if !portAdmits(rule.Ports, w, port) {
				continue
			}
			for _, from := range rule.From {
				if peerAdmits(from, p) {
					return true
				}
			}
		}
	}
	return !selecting
}

func portAdmits(ports []networkingv1.NetworkPolicyPort, w workload, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		switch {
		case pp.Port == nil:
			return true
		case pp.Port.Type == intstr.Int && pp.Port.IntVal == port:
			return true
		case pp.Port.Type == intstr.String:
			for _, c := range w.template.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == pp.Port.StrVal && cp.ContainerPort == port {
						return true
					}
				}
			}
		}
	}
	return false
}

func peerAdmits(from networkingv1.NetworkPolicyPeer, p peer) bool {
	if from.IPBlock != nil {
		return false // no IP ranges are admitted here
	}
	nsOK := p.ns == namespace
	if from.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(from.NamespaceSelector)
		nsOK = err == nil && sel.Matches(labels.Set{"kubernetes.io/metadata.name": p.ns})
	}
	podOK := true
	if from.PodSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(from.PodSelector)
		podOK = err == nil && sel.Matches(labels.Set(p.labels))
	}
	return nsOK && podOK
}

// checkNetworkPolicies: nothing reaches a pod of the namespace unless allowed; the API is
// reached from the ingress controller, the other API pods and Prometheus; PostgreSQL and the
// Redis nodes from the API only.
func checkNetworkPolicies(t *testing.T, o *objects) {
	t.Helper()
	deny := false
	for _, np := range o.netpols {
		if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && len(np.Spec.Ingress) == 0 {
			deny = true
		}
	}
	if !deny {
		t.Errorf("no default-deny NetworkPolicy: every pod accepts connections from anywhere in the cluster")
	}
	api := o.deployments["coupon-api"]
	if api == nil {
		return
	}
	apiPod := peer{namespace, api.Spec.Template.Labels}
	stranger := peer{"default", map[string]string{"app": "anything"}}
	for _, w := range o.workloads() {
		switch {
		case w.name == "coupon-api":
			for _, p := range []peer{{"ingress-nginx", nil}, apiPod, {"monitoring", nil}} {
				if !o.allowed(p, w, 8080) {
					t.Errorf("NetworkPolicy: %s/%v cannot reach the API on 8080", p.ns, p.labels)
				}
			}
			if o.allowed(stranger, w, 8080) {
				t.Errorf("NetworkPolicy: a pod of namespace default reaches the API directly")
			}
			// The admin listener: nobody (kubectl port-forward enters the pod itself).
			for _, p := range []peer{{"ingress-nginx", nil}, apiPod, {"monitoring", nil}, stranger} {
				if o.allowed(p, w, 8081) {
					t.Errorf("NetworkPolicy: %s/%v reaches the API's admin port 8081", p.ns, p.labels)
				}
			}
		case w.name == "postgres" || strings.HasPrefix(w.name, "redis-"):
			port := int32(6379)
			if w.name == "postgres" {
				port = 5432
			}
			if !o.allowed(apiPod, w, port) {
				t.Errorf("NetworkPolicy: the API cannot reach %s on %d", w.name, port)
			}
			other := o.workloads()[0]
			for _, x := range o.workloads() {
				if x.name != w.name && x.name != "coupon-api" {
					other = x
				}
			}
			for _, p := range []peer{stranger, {namespace, other.template.Labels}, {"ingress-nginx", nil}} {
				if o.allowed(p, w, port) {
					t.Errorf("NetworkPolicy: %s/%v reaches %s on %d; only the API may", p.ns, p.labels, w.name, port)
				}
			}
		}
	}
}
