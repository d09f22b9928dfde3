{{- define "orrery-spoke.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orrery-spoke.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orrery-spoke.labels" -}}
app.kubernetes.io/name: {{ include "orrery-spoke.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
orrery.dev/cluster: {{ .Values.cluster | quote }}
{{- end -}}

{{- define "orrery-spoke.selector" -}}
app.kubernetes.io/name: {{ include "orrery-spoke.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "orrery-spoke.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "orrery-spoke.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "orrery-spoke.sliceServiceAccount" -}}
{{- if .Values.slices.serviceAccount -}}
{{- .Values.slices.serviceAccount -}}
{{- end -}}
{{- end -}}

{{- define "orrery-spoke.slicesNamespace" -}}
{{- default .Release.Namespace .Values.slices.namespace -}}
{{- end -}}

{{- define "orrery-spoke.identityClaim" -}}
{{- default (printf "%s-identity" (include "orrery-spoke.fullname" .)) .Values.identity.persistence.existingClaim -}}
{{- end -}}
