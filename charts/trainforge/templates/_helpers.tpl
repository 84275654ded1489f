{{/* Chart name, overridable. */}}
{{- define "trainforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every resource: <release>-<chart>, or the release name if it contains the chart name. */}}
{{- define "trainforge.fullname" -}}
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

{{/* A resource name with a suffix, kept within 63 characters. */}}
{{- define "trainforge.componentName" -}}
{{- $base := include "trainforge.fullname" .root | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base .suffix }}
{{- end }}

{{/* Selector labels: minimal and stable (never add a version here: selectors are immutable). */}}
{{- define "trainforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "trainforge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trainforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainforge
{{- end }}

{{/* Labels every Ray pod carries (chart RayCluster and dispatcher-made RayJobs): the NetworkPolicies select on them. */}}
{{- define "trainforge.rayPodLabels" -}}
{{ include "trainforge.selectorLabels" . }}
app.kubernetes.io/part-of: trainforge
{{- end }}

{{/* The service account of one team's Ray pods: its name value, or <fullname>-team-<team>. */}}
{{- define "trainforge.teamServiceAccountName" -}}
{{- $account := .account | default dict }}
{{- default (printf "%s-team-%s" (include "trainforge.fullname" .root) .team | trunc 63 | trimSuffix "-") $account.name }}
{{- end }}

{{- define "trainforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trainforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "trainforge.dispatcherServiceAccountName" -}}
{{- if .Values.dispatcher.serviceAccount.create }}
{{- default (include "trainforge.componentName" (dict "root" . "suffix" "dispatcher")) .Values.dispatcher.serviceAccount.name }}
{{- else }}
{{- required "dispatcher.serviceAccount.name is required when dispatcher.serviceAccount.create is false" .Values.dispatcher.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "trainforge.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "trainforge.apiImage" -}}
{{- include "trainforge.imageRef" (dict "image" .Values.image "root" .) }}
{{- end }}

{{- define "trainforge.trainImage" -}}
{{- include "trainforge.imageRef" (dict "image" .Values.trainImage "root" .) }}
{{- end }}

{{/* RayCluster name: KubeRay refuses names over 53 characters. */}}
{{- define "trainforge.rayClusterName" -}}
{{- printf "%s-ray" (include "trainforge.fullname" . | trunc 49 | trimSuffix "-") }}
{{- end }}

{{/* In-cluster URL of the API, which jobs report progress to. */}}
{{- define "trainforge.apiUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "trainforge.componentName" (dict "root" . "suffix" "api")) .Release.Namespace (int .Values.api.service.port) }}
{{- end }}

{{/* Pod-level security context of the API and dispatcher (Dockerfile.api's non-root user). */}}
{{- define "trainforge.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context meeting Pod Security "restricted". */}}
{{- define "trainforge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment shared by the API and dispatcher. */}}
{{- define "trainforge.commonEnv" -}}
- name: TRAINFORGE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
- name: TRAINFORGE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretKey.existingSecret }}
      key: {{ .Values.secretKey.key }}
- name: TRAINFORGE_ARTIFACTS_URI
  value: {{ .Values.config.artifactsUri | quote }}
- name: TRAINFORGE_MODELS_URI
  value: {{ .Values.config.modelsUri | quote }}
- name: TRAINFORGE_DEFAULT_LIMITS
  value: {{ .Values.config.defaultLimits | toJson | quote }}
{{- with .Values.config.teamLimits }}
- name: TRAINFORGE_TEAM_LIMITS
  value: {{ . | toJson | quote }}
{{- end }}
- name: TRAINFORGE_STORAGE_POLICY
  value: {{ .Values.config.storagePolicy | toJson | quote }}
- name: TRAINFORGE_WEBHOOK_ALLOWED_HOSTS
  value: {{ .Values.config.webhookAllowedHosts | toJson | quote }}
{{- with .Values.config.s3EndpointUrl }}
- name: TRAINFORGE_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.awsRegion }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* Checks that JSON Schema cannot express; each failure says which value to change. */}}
{{- define "trainforge.validate" -}}
{{- if not (hasKey .Values.nodePools .Values.defaultNodePool) }}
{{- fail (printf "defaultNodePool %q is not a key of nodePools (%s)" .Values.defaultNodePool (keys .Values.nodePools | sortAlpha | join ", ")) }}
{{- end }}
{{- if and (eq .Values.dispatcher.backend "ray") (not .Values.rayCluster.enabled) }}
{{- fail "dispatcher.backend=ray needs rayCluster.enabled=true (the Ray Jobs API runs on that cluster)" }}
{{- end }}
{{- if .Values.rayCluster.enabled }}
{{- range $name, $group := .Values.rayCluster.workerGroups }}
{{- if not (hasKey $.Values.nodePools $group.nodePool) }}
{{- fail (printf "rayCluster.workerGroups.%s.nodePool %q is not a key of nodePools" $name $group.nodePool) }}
{{- end }}
{{- $pool := get $.Values.nodePools $group.nodePool }}
{{- if and (not (kindIs "invalid" $pool.maxGpusPerWorker)) (gt (int $group.gpus) (int $pool.maxGpusPerWorker)) }}
{{- fail (printf "rayCluster.workerGroups.%s.gpus %d is more than nodePools.%s.maxGpusPerWorker (%d)" $name (int $group.gpus) $group.nodePool (int $pool.maxGpusPerWorker)) }}
{{- end }}
{{- if gt (int $group.minReplicas) (int $group.maxReplicas) }}
{{- fail (printf "rayCluster.workerGroups.%s: minReplicas %d > maxReplicas %d" $name (int $group.minReplicas) (int $group.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.api.autoscaling.enabled (gt (int .Values.api.autoscaling.minReplicas) (int .Values.api.autoscaling.maxReplicas)) }}
{{- fail "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.kuberay.kueue.enabled (not .Values.kuberay.kueue.queues) (not .Values.kuberay.kueue.defaultQueue) }}
{{- fail "kuberay.kueue.enabled needs kuberay.kueue.queues (team: LocalQueue) or kuberay.kueue.defaultQueue" }}
{{- end }}
{{- end }}

{{/* Container security context of Ray containers ("restricted"; Ray writes under /tmp and $HOME, so the root filesystem stays writable). */}}
{{- define "trainforge.rayContainerSecurity" -}}
allowPrivilegeEscalation: false
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{/* Environment of Ray containers in the chart's RayCluster (the kuberay backend passes the same through its config). */}}
{{- define "trainforge.rayEnv" -}}
- name: TRAINFORGE_ARTIFACTS_URI
  value: {{ .Values.config.artifactsUri | quote }}
- name: TRAINFORGE_MODELS_URI
  value: {{ .Values.config.modelsUri | quote }}
- name: TRAINFORGE_DEFAULT_LIMITS
  value: {{ .Values.config.defaultLimits | toJson | quote }}
{{- with .Values.config.teamLimits }}
- name: TRAINFORGE_TEAM_LIMITS
  value: {{ . | toJson | quote }}
{{- end }}
- name: TRAINFORGE_API_URL
  value: {{ include "trainforge.apiUrl" . | quote }}
{{- with .Values.config.s3EndpointUrl }}
- name: TRAINFORGE_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.pushgatewayUrl }}
- name: TRAINFORGE_PUSHGATEWAY_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.awsRegion }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* /dev/shm size: the configured one, or half the container memory (shm counts against the limit). */}}
{{- define "trainforge.shmSize" -}}
{{- if .configured }}
{{- .configured }}
{{- else }}
{{- $num := regexFind "^[0-9]+" .memory | int }}
{{- $unit := regexFind "(Mi|Gi|Ti)$" .memory }}
{{- $perMi := get (dict "Mi" 1 "Gi" 1024 "Ti" 1048576) $unit | int }}
{{- printf "%dMi" (max 64 (div (mul $num $perMi) 2)) }}
{{- end }}
{{- end }}
