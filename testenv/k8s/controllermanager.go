package main

import (
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// runControllerManager is upstream cmd/kube-controller-manager's main.
func runControllerManager(_ []string) int {
	return cli.Run(controllermanager.NewControllerManagerCommand())
}
