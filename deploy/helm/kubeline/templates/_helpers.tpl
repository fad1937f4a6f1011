{{- define "kubeline.labels" -}}
app.kubernetes.io/part-of: kubeline
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "kubeline.serverSelector" -}}
app.kubernetes.io/name: kubeline
app.kubernetes.io/component: server
{{- end -}}

{{- define "kubeline.secretName" -}}
{{- if .Values.secrets.existingSecret -}}{{ .Values.secrets.existingSecret }}{{- else -}}kubeline-secrets{{- end -}}
{{- end -}}
