//go:build tools

// Package kube only pins the Kubernetes commands that scripts/kube.sh builds; it has no code.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
