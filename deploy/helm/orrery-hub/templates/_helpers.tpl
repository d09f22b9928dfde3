{{- define "orrery-hub.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orrery-hub.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orrery-hub.labels" -}}
app.kubernetes.io/name: {{ include "orrery-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "orrery-hub.selector" -}}
app.kubernetes.io/name: {{ include "orrery-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{- define "orrery-hub.natsSelector" -}}
app.kubernetes.io/name: {{ include "orrery-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: nats
{{- end -}}

{{- define "orrery-hub.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "orrery-hub.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "orrery-hub.natsUrl" -}}
{{- if .Values.nats.url -}}
{{- .Values.nats.url -}}
{{- else -}}
{{- /* the nats-server beside the hub, in the same pod */ -}}
{{- print "tls://localhost:4222" -}}
{{- end -}}
{{- end -}}

{{- define "orrery-hub.dbSecret" -}}
{{- default (printf "%s-db" (include "orrery-hub.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "orrery-hub.sqlite" -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "orrery-hub.scheme" -}}
{{- if .Values.api.tls.secretName -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}
