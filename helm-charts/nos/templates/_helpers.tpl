{{/* Chart name, cut to 63 characters (a DNS label). */}}
{{- define "nos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; room is left for the "-partitioner" / "-mig-agent" suffixes. */}}
{{- define "nos.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 35 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 35 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 35 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nos.partitioner.fullname" -}}
{{- printf "%s-partitioner" (include "nos.fullname" .) }}
{{- end }}

{{- define "nos.agent.fullname" -}}
{{- printf "%s-mig-agent" (include "nos.fullname" .) }}
{{- end }}

{{- define "nos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "nos.labels" -}}
helm.sh/chart: {{ include "nos.chart" . }}
app.kubernetes.io/name: {{ include "nos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nos
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (immutable once installed: keep them small). */}}
{{- define "nos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nos.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "nos.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "nos.partitioner.serviceAccountName" -}}
{{- if .Values.gpuPartitioner.serviceAccount.create }}
{{- default (include "nos.partitioner.fullname" .) .Values.gpuPartitioner.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gpuPartitioner.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nos.agent.serviceAccountName" -}}
{{- if .Values.migAgent.serviceAccount.create }}
{{- default (include "nos.agent.fullname" .) .Values.migAgent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.migAgent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The config file both processes read (/etc/nos/config.yaml); each reads its own section. */}}
{{- define "nos.config" -}}
{{- $p := .Values.gpuPartitioner }}
{{- $a := .Values.migAgent }}
{{- $le := $p.leaderElection }}
partitioner:
  batchWindowIdleSeconds: {{ $p.batchWindowIdleSeconds | int }}
  batchWindowTimeoutSeconds: {{ $p.batchWindowTimeoutSeconds | int }}
  reportTimeoutSeconds: {{ $p.reportTimeoutSeconds | int }}
  fillSpare: {{ $p.fillSpare }}
  profileShares: {{ $p.profileShares }}
  profileMix: {{ $p.profileMix | default dict | toJson }}
  planBudgetSeconds: {{ $p.planBudgetSeconds }}
  knownGeometriesFile: /etc/nos/known-mig-geometries.yaml
  livenessTimeoutSeconds: {{ $p.livenessTimeoutSeconds | toJson }}
  fairness:
    agingStepSeconds: {{ $p.fairness.agingStepSeconds | toJson }}
    reserveAfterSeconds: {{ $p.fairness.reserveAfterSeconds | toJson }}
    maxReservedShare: {{ $p.fairness.maxReservedShare | toJson }}
  leaderElection:
    enabled: {{ $le.enabled }}
    leaseName: {{ $le.leaseName | toJson }}
    namespace: {{ .Release.Namespace | toJson }}
    leaseDurationSeconds: {{ $le.leaseDurationSeconds | int }}
    renewDeadlineSeconds: {{ $le.renewDeadlineSeconds | int }}
    retryPeriodSeconds: {{ $le.retryPeriodSeconds | int }}
agent:
  reportIntervalSeconds: {{ $a.reportIntervalSeconds | int }}
  podResourcesSocket: {{ printf "%s/kubelet.sock" (trimSuffix "/" $a.podResourcesHostPath) | toJson }}
  nvmlCallTimeoutSeconds: {{ $a.nvmlCallTimeoutSeconds | toJson }}
  livenessTimeoutSeconds: {{ $a.livenessTimeoutSeconds | toJson }}
  devicePlugin:
    namespace: {{ $a.devicePlugin.namespace | toJson }}
    labelSelector: {{ $a.devicePlugin.labelSelector | toJson }}
    timeoutSeconds: {{ $a.devicePlugin.timeoutSeconds | int }}
server:
  metricsPort: {{ .Values.server.metricsPort | int }}
  healthPort: {{ .Values.server.healthPort | int }}
log:
  level: {{ .Values.log.level | toJson }}
  format: {{ .Values.log.format | toJson }}
{{- end }}

{{/* Volume with the config file and the known geometries, both under /etc/nos. */}}
{{- define "nos.configVolume" -}}
- name: config
  projected:
    sources:
      - configMap:
          name: {{ include "nos.fullname" . }}-config
          items:
            - key: config.yaml
              path: config.yaml
      - configMap:
          name: {{ include "nos.fullname" . }}-known-mig-geometries
          items:
            - key: known-mig-geometries.yaml
              path: known-mig-geometries.yaml
{{- end }}
