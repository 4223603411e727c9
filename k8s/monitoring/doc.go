// Package monitoring holds the kustomize overlay that adds kube-prometheus-stack's objects to
// couponsvc's event setup (kubectl apply -k k8s/monitoring): a ServiceMonitor, the Grafana
// dashboard (dashboard.json) as a ConfigMap for Grafana's sidecar, and the event's alerts as a
// PrometheusRule. It has no Go code; its test, a module of its own so that the service's go.mod
// does not carry Prometheus, decodes the rendered objects strictly into the Prometheus
// Operator's types and checks every query with Prometheus's own PromQL parser and rule loader.
package monitoring
