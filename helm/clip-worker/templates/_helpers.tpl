{{/* Chart name, truncated to a DNS label. */}}
{{- define "clip-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name of every object. */}}
{{- define "clip-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "clip-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clip-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "clip-worker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "clip-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "clip-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "clip-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: digest wins over tag; the default tag follows the appVersion and the GPU flavour. */}}
{{- define "clip-worker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := .Values.image.tag | default (printf "%s%s" .Chart.AppVersion (ternary "-cuda" "" .Values.gpu.enabled)) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the bundled NATS chart's objects (its own naming rule). */}}
{{- define "clip-worker.natsFullname" -}}
{{- $nats := .Values.nats | default dict }}
{{- if $nats.fullnameOverride }}
{{- $nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "nats" $nats.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* NATS URLs the workers connect to. */}}
{{- define "clip-worker.natsUrl" -}}
{{- if .Values.natsClient.url }}
{{- .Values.natsClient.url }}
{{- else if .Values.nats.enabled }}
{{- printf "nats://%s.%s.svc:4222" (include "clip-worker.natsFullname" .) .Release.Namespace }}
{{- else }}
{{- fail "natsClient.url is required unless nats.enabled (the bundled NATS chart)" }}
{{- end }}
{{- end }}

{{/* NATS monitoring endpoint (host:port) that KEDA polls for the consumer's backlog. */}}
{{- define "clip-worker.natsMonitoringEndpoint" -}}
{{- if .Values.autoscaling.keda.monitoringEndpoint }}
{{- .Values.autoscaling.keda.monitoringEndpoint }}
{{- else if .Values.nats.enabled }}
{{- printf "%s-headless.%s.svc:%v" (include "clip-worker.natsFullname" .) .Release.Namespace (.Values.nats.config.monitor.port | default 8222) }}
{{- else }}
{{- fail "autoscaling.keda.monitoringEndpoint is required unless nats.enabled (the bundled NATS chart)" }}
{{- end }}
{{- end }}

{{/* --device: explicit, else every GPU of the pod, else cpu. */}}
{{- define "clip-worker.device" -}}
{{- if .Values.worker.device }}
{{- .Values.worker.device }}
{{- else if .Values.gpu.enabled }}
{{- $devices := list }}
{{- range $i := until (int .Values.gpu.count) }}
{{- $devices = append $devices (printf "cuda:%d" $i) }}
{{- end }}
{{- join "," $devices }}
{{- else }}
{{- print "cpu" }}
{{- end }}
{{- end }}

{{/* A setting's value as the binary reads it: whole numbers without an exponent. */}}
{{- define "clip-worker.envValue" -}}
{{- if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{- define "clip-worker.terminationGracePeriodSeconds" -}}
{{- $shutdown := int .Values.shutdown.timeoutSeconds }}
{{- $grace := .Values.shutdown.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $grace }}
{{- add $shutdown 15 }}
{{- else if le (int $grace) $shutdown }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must exceed shutdown.timeoutSeconds (%d), or Kubernetes kills workers mid-drain" (int $grace) $shutdown) }}
{{- else }}
{{- int $grace }}
{{- end }}
{{- end }}

{{/* Model cache settings shared by the worker and the init container that pre-fills the cache. */}}
{{- define "clip-worker.modelEnv" -}}
- name: CLIP_WORKER_MODEL_CACHE
  value: {{ .Values.modelCache.mountPath | quote }}
{{- with .Values.modelCache.mirrorUrl }}
- name: CLIP_WORKER_MODEL_URL_BASE
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "clip-worker.logEnv" -}}
- name: CLIP_WORKER_LOG
  value: {{ .Values.logFilter | quote }}
{{- with .Values.worker.logFormat }}
- name: CLIP_WORKER_LOG_FORMAT
  value: {{ . | quote }}
{{- end }}
{{- end }}
