{{/* Helm's own labels, on every object (the objects copied from crds/ get only these). */}}
{{- define "kubemill.helmLabels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Labels on the operator's objects: deploy/base's (app.kubernetes.io/part-of) and Helm's. */}}
{{- define "kubemill.labels" -}}
app.kubernetes.io/part-of: kubemill
{{ include "kubemill.helmLabels" . }}
{{- end }}

{{/*
The image reference of {repository, tag, digest}: repository@digest when a digest is set (what
the release signs, and what a registry cannot move), else repository:tag, the tag defaulting to
the chart's appVersion.
*/}}
{{- define "kubemill.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/*
settings.startTimeout as the operator reads it. values.schema.json holds it to the operator's
syntax; what JSON Schema cannot say is the operator's minimum of 1 s (a shorter one makes it
refuse to start), so the parts are added up here as runner/rules.py duration_seconds does.
*/}}
{{- define "kubemill.startTimeout" -}}
{{- $text := toString .Values.settings.startTimeout -}}
{{- if ne $text "0" -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $seconds := 0.0 -}}
{{- range $part := regexFindAll "[0-9.]+(ms|s|m|h)" $text -1 -}}
{{- $unit := regexFind "(ms|s|m|h)$" $part -}}
{{- $seconds = addf $seconds (mulf (trimSuffix $unit $part) (get $units $unit)) -}}
{{- end -}}
{{- if lt $seconds 1.0 -}}
{{- fail (printf "settings.startTimeout: %s is shorter than 1s; write a longer duration, or 0 for no limit" $text) -}}
{{- end -}}
{{- end -}}
{{- $text -}}
{{- end }}

{{/*
The operator's settings as the ConfigMap's data (a map), from .Values.settings.
*/}}
{{- define "kubemill.settings" -}}
{{- $s := .Values.settings -}}
{{- $data := dict
  "KUBEMILL_RUNNER_IMAGE" (include "kubemill.image" (dict "image" .Values.runnerImage "chart" .Chart))
  "KUBEMILL_OUTPUT_PREFIX" $s.outputPrefix
  "KUBEMILL_S3_ENDPOINT_URL" $s.s3EndpointUrl
  "KUBEMILL_S3_CREDENTIALS_SECRET" $s.s3CredentialsSecret
  "KUBEMILL_NAMESPACES" (join "," .Values.watchNamespaces)
  "KUBEMILL_LOG_LEVEL" $s.logLevel
  "KUBEMILL_START_TIMEOUT" (include "kubemill.startTimeout" .)
  "KUBEMILL_VIEWER_URL" $s.viewerUrl
  "KUBEMILL_VIEWER_ROOT" $s.viewerRoot
-}}
{{- if not (kindIs "invalid" $s.defaultTtlSeconds) -}}
{{- $_ := set $data "KUBEMILL_DEFAULT_TTL_SECONDS" (toString (int64 $s.defaultTtlSeconds)) -}}
{{- end -}}
{{- if not (kindIs "invalid" $s.terminationGraceSeconds) -}}
{{- $_ := set $data "KUBEMILL_TERMINATION_GRACE_SECONDS" (toString (int64 $s.terminationGraceSeconds)) -}}
{{- end -}}
{{- if $s.runnerCommand -}}
{{- $_ := set $data "KUBEMILL_RUNNER_COMMAND" $s.runnerCommand -}}
{{- end -}}
{{- range $key, $value := .Values.extraSettings -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end }}

{{/* The operator's rules, for its ClusterRole or for a Role in each watched namespace. */}}
{{- define "kubemill.operatorRules" -}}
# Follow NotebookRuns in every watched namespace; create a schedule's and a workflow's runs,
# and delete a schedule's when a newer slot replaces them (concurrencyPolicy Replace) or a
# history limit prunes them, and a workflow's that only wait for a step that will not run
# (failFast, a failed upstream). Get one by name when its create answers 409: a namesake the
# workflow does not own must not pass for its step's run.
# Nothing is ever written on a run but its status.
- apiGroups: [kubemill.dev]
  resources: [notebookruns]
  verbs: [get, list, watch, create, delete]
# Follow NotebookSchedules (read only: the trigger annotation is read, never written).
- apiGroups: [kubemill.dev]
  resources: [notebookschedules]
  verbs: [list, watch]
# Write each schedule's status: last and next slot, active runs, conditions.
- apiGroups: [kubemill.dev]
  resources: [notebookschedules/status]
  verbs: [patch]
# Follow NotebookWorkflows; the operator creates each step's runs from the spec and never
# writes it. Create a schedule's workflows (spec.workflowTemplate), and delete them when a
# newer slot replaces them (concurrencyPolicy Replace) or a history limit prunes them.
- apiGroups: [kubemill.dev]
  resources: [notebookworkflows]
  verbs: [list, watch, create, delete]
# Write each workflow's status: phase, progress, each step's runs, tests, conditions.
- apiGroups: [kubemill.dev]
  resources: [notebookworkflows/status]
  verbs: [patch]
# Write each run's status: phase, conditions, results, failure.
- apiGroups: [kubemill.dev]
  resources: [notebookruns/status]
  verbs: [patch]
# Jobs are owned by their run, and runs by their schedule or workflow, with
# blockOwnerDeletion; clusters that enforce owner reference permissions (OpenShift) require
# this to set it.
- apiGroups: [kubemill.dev]
  resources: [notebookruns/finalizers, notebookschedules/finalizers, notebookworkflows/finalizers]
  verbs: [update]
# Create the Job that executes a run and watch Jobs to follow it; patch only to take
# kubemill's finalizer off a Job once the run's outcome is recorded; delete a run's Job when
# its pod did not start within the start timeout.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch, delete]
# Create the immutable ConfigMaps that carry a run's parameters into its runner pod. Create
# only: never get, list or watch, so no ConfigMap is readable by the operator.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create]
# Read runner pods' status (the runner's summary is their termination message); patch only to
# take kubemill's finalizer off a runner pod once the run's outcome is recorded.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
# Post Events on runs and schedules.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Read the Events that alone say why a runner pod does not start (FailedCreate, FailedMount).
- apiGroups: [""]
  resources: [events]
  verbs: [list, watch]
{{- end }}
