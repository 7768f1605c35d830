{{/* Chart name. */}}
{{- define "iq720-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "iq720-operator.fullname" -}}
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

{{/* Common labels. */}}
{{- define "iq720-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "iq720-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: iq720
{{- end }}

{{/* Selector labels. */}}
{{- define "iq720-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iq720-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "iq720-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "iq720-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Rules for the objects the operator manages; shared by the ClusterRole and the namespaced
Role. Least privilege: each verb is one the operator calls (see README "RBAC"). Nothing
is deleted by the operator (owned objects go by garbage collection through their owner
references), so there is no delete verb; Secrets are never listed or watched.
*/}}
{{- define "iq720-operator.managedRules" -}}
- apiGroups: ["trading.iq720.io"]
  resources: ["tradingbots", "backupschedules", "maintenancewindows"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["trading.iq720.io"]
  resources: ["tradingbots/status", "backupschedules/status", "maintenancewindows/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["trading.iq720.io"]
  resources: ["tradingbots/finalizers", "backupschedules/finalizers", "maintenancewindows/finalizers"]
  verbs: ["update"]
# Owned objects: watched (they trigger reconciles and fill the operator's cache, so
# reads and the ownership check cost no request) and server-side applied.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The bots' API token Secrets: read, created once, rewritten when emptied by hand.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "update"]
# The bots' database claims: read and expanded in place when spec.storage.size grows.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "patch"]
# The bot pods: IP, readiness and termination state, watched into the cache. Restore
# drills run in throwaway pods (created, their log read, deleted); the log of a bot
# pod's restore init container says what a bootstrap restore did.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
