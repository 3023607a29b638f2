// The differential test's oracle: Kubernetes' cronjob controller's cron parser, alone.
// Built by hack/crondiff/build.sh; the version is the one k8s.io/kubernetes v1.36.3 requires
// (testenv/k8s/go.sum), so the oracle is the parser the control plane's CronJobs use.
module kubemill.dev/hack/crondiff

go 1.26.0

require github.com/robfig/cron/v3 v3.0.1
