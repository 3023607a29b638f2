// Command kubemill-k8s is one binary that is etcd, kube-apiserver, kube-controller-manager and
// kubectl of one pinned Kubernetes version, chosen by the name it is invoked as (symlinks) or by
// its first argument. One binary links the shared Kubernetes packages once, which roughly halves
// the cold build on two cores compared with four separate binaries; each component still runs
// in its own process, so no global state is shared between them.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

var components = map[string]func(args []string) int{
	"etcd":                    runEtcd,
	"kube-apiserver":          runAPIServer,
	"kube-controller-manager": runControllerManager,
	"kubectl":                 runKubectl,
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := components[name]; !ok {
		if len(args) == 0 {
			usage()
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	run, ok := components[name]
	if !ok {
		usage()
		os.Exit(2)
	}
	// Cobra reads os.Args itself in some paths (completion, plugin lookup), so make it look
	// exactly like the upstream binary was started.
	os.Args = append([]string{name}, args...)
	os.Exit(run(args))
}

func usage() {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	fmt.Fprintf(os.Stderr, "usage: kubemill-k8s {%s} [flags]\n", strings.Join(names, "|"))
}
