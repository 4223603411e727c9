// Package k8s holds couponsvc's Kubernetes manifests (kustomize: kubectl apply -k k8s/, or
// k8s/autoscale for normal traffic, both in demo mode; k8s/production with verified identities). It has no Go code; its test renders the kustomizations with
// kustomize's Go API, strictly decodes every object into the k8s.io/api types and checks what
// must hold for the deployment to work (see manifests_test.go and README.md).
package k8s
