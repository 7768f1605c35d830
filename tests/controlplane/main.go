// Command iq720-controlplane runs one component of a real Kubernetes control plane
// (etcd, kube-apiserver, kube-controller-manager or kube-scheduler) per process.
//
// Usage: iq720-controlplane <component> [component flags...]
//
// It links the upstream component code (k8s.io/kubernetes v1.34.x, go.etcd.io/etcd
// v3.6.x) so that local tests talk to the same API server code as a real cluster.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/component-base/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage: %s <component> [flags...]

components:
  etcd                     etcd server (go.etcd.io/etcd/server/v3 etcdmain)
  kube-apiserver           Kubernetes API server
  kube-controller-manager  Kubernetes controller manager
  kube-scheduler           Kubernetes scheduler
  version                  print the Kubernetes version this binary was built from
`, filepath.Base(os.Args[0]))
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	component, rest := os.Args[1], os.Args[2:]
	switch component {
	case "etcd":
		// etcdmain.Main expects argv including the program name.
		etcdmain.Main(append([]string{"etcd"}, rest...))
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "version", "--version", "-version":
		fmt.Println(version.Get().GitVersion)
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q\n", component)
		usage()
		os.Exit(2)
	}
}
