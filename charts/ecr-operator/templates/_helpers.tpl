{{- define "ecr-operator.name" -}}ecr-operator{{- end -}}

{{- define "ecr-operator.fullname" -}}
{{- if contains "ecr-operator" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-ecr-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "ecr-operator.labels" -}}
app.kubernetes.io/name: ecr-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ecr-operator.selectorLabels" -}}
app.kubernetes.io/name: ecr-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecr-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "ecr-operator.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* The pull-secret settings as JSON. Account IDs are strings with leading zeros kept, even when a values
file wrote them unquoted (YAML reads 012345678901 as a number). */}}
{{- define "ecr-operator.pullSecretsJson" -}}
{{- $registries := list -}}
{{- range .Values.pullSecrets.registries -}}
{{- $account := .accountId -}}
{{- if not (kindIs "string" $account) -}}{{- $account = printf "%012d" (int64 $account) -}}{{- end -}}
{{- $registry := dict "accountId" $account "region" .region -}}
{{- with .roleArn -}}{{- $_ := set $registry "roleArn" . -}}{{- end -}}
{{- $registries = append $registries $registry -}}
{{- end -}}
{{- $settings := pick .Values.pullSecrets "namespaceSelector" "serviceAccountSelector" "secretName" -}}
{{- $_ := set $settings "registries" $registries -}}
{{- toJson $settings -}}
{{- end -}}
