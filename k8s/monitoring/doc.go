// Package monitoring holds the kustomization that adds kube-prometheus-stack's objects next to
// couponsvc's setup (kubectl apply --server-side -k k8s/monitoring): a ServiceMonitor, the Grafana
// dashboard (dashboard.json) as a ConfigMap for Grafana's sidecar, and the event's alerts as a
// PrometheusRule. It has no Go code; its tests, a module of their own so that the service's
// go.mod does not carry Prometheus, decode the rendered objects strictly into the Prometheus
// Operator's types, check the ServiceMonitor against every setup's Service, load the rules with
// Prometheus's own rule loader, evaluate the alerts with its engine, and parse every dashboard
// query with its PromQL parser.
package monitoring
