// Package k8s holds couponsvc's Kubernetes manifests (kustomize: kubectl apply --server-side -k
// k8s/, or k8s/autoscale for normal traffic, both in demo mode; k8s/production with verified
// identities). It has no Go code. Its tests render the
// kustomizations with kustomize's Go API, strictly decode every object into the k8s.io/api types
// and check what must hold for the deployment to work (manifests_test.go); then apply them to a
// real Kubernetes API server, check what it stored, and run README.md's commands against it
// (apiserver_test.go).
package k8s
