package main

import (
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// runAPIServer is upstream cmd/kube-apiserver's main.
func runAPIServer(_ []string) int {
	return cli.Run(apiserver.NewAPIServerCommand())
}
