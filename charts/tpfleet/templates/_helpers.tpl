{{/* Object name prefix: the release name when it already contains the chart name (release
"tpfleet" gives tpfleet-operator, the names operator/deploy/rbac.yaml uses), else <release>-<chart>. */}}
{{- define "tpfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tpfleet.operatorName" -}}
{{- printf "%s-operator" (include "tpfleet.fullname" .) -}}
{{- end -}}

{{/* Labels of every object of the release. app.kubernetes.io/instance is the release name: the
node pods the operator renders carry instance=<TransparentProxy name> and managed-by
tpfleet-operator, so selectors below always add the component as well. */}}
{{- define "tpfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tpfleet
{{- end -}}

{{- define "tpfleet.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* repository[:tag|@digest]; the tag defaults to the chart's appVersion. */}}
{{- define "tpfleet.image" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Cross-field rules values.schema.json cannot express (mirrored in api/chart-values.ts). */}}
{{- define "tpfleet.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElect) -}}
{{- fail (printf "operator.leaderElect: must be true when operator.replicas > 1 (got replicas %d): two operators without leader election would fight over every object" (int .Values.operator.replicas)) -}}
{{- end -}}
{{- if and .Values.janitor.enabled (or (eq .Values.janitor.namespace .Release.Namespace) (eq .Values.janitor.namespace .Values.fleetNamespace.name)) -}}
{{- fail (printf "janitor.namespace: %q must differ from the release namespace (restricted) and the fleet namespace (deleting it must not take the janitor along)" .Values.janitor.namespace) -}}
{{- end -}}
{{- if and .Values.fleetNamespace.create (eq .Values.fleetNamespace.name .Release.Namespace) -}}
{{- fail (printf "fleetNamespace.name: %q is the release namespace; the fleet namespace is labelled privileged and must be a separate one (the operator's stays restricted)" .Values.fleetNamespace.name) -}}
{{- end -}}
{{- end -}}
