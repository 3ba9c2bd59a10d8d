{{/* Names */}}
{{- define "aibridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aibridge.fullname" -}}
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

{{/* The name of a component's objects: (dict "root" $ "component" "proxy") */}}
{{- define "aibridge.componentName" -}}
{{- printf "%s-%s" (include "aibridge.fullname" .root | trunc 54 | trimSuffix "-") .component }}
{{- end }}

{{- define "aibridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels */}}
{{- define "aibridge.labels" -}}
helm.sh/chart: {{ include "aibridge.chart" . }}
{{ include "aibridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aibridge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aibridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aibridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* (dict "root" $ "component" "proxy") */}}
{{- define "aibridge.componentLabels" -}}
{{ include "aibridge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "aibridge.componentSelectorLabels" -}}
{{ include "aibridge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "aibridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aibridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The port each component listens on inside its container. */}}
{{- define "aibridge.containerPort" -}}
{{- get (dict "proxy" "8080" "api" "8081" "recorder" "8082") . }}
{{- end }}

{{/* (dict "root" $ "component" "proxy") */}}
{{- define "aibridge.image" -}}
{{- $values := index .root.Values .component }}
{{- $repository := $values.image.repository | default .root.Values.image.repository }}
{{- $tag := $values.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{- define "aibridge.imagePullPolicy" -}}
{{- $values := index .root.Values .component }}
{{- $values.image.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{- define "aibridge.secretName" -}}
{{- include "aibridge.fullname" . }}
{{- end }}

{{/* The Secret and key of the token public key. */}}
{{- define "aibridge.authSecretName" -}}
{{- .Values.auth.existingSecret | default (include "aibridge.secretName" .) }}
{{- end }}

{{- define "aibridge.authSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}auth-public-key{{ end }}
{{- end }}

{{/* Whether a provider has a key: (dict "provider" .Values.providers.openai) */}}
{{- define "aibridge.providerConfigured" -}}
{{- if or .provider.apiKey .provider.existingSecret }}true{{ end }}
{{- end }}

{{- define "aibridge.clickhouseCredentials" -}}
{{- if or .Values.clickhouse.existingSecret .Values.clickhouse.password }}true{{ end }}
{{- end }}

{{- define "aibridge.spendConfigMapName" -}}
{{- printf "%s-spend" (include "aibridge.fullname" .) }}
{{- end }}

{{- define "aibridge.mcpConfigMapName" -}}
{{- printf "%s-mcp-servers" (include "aibridge.fullname" .) }}
{{- end }}

{{/* The proxy's MCP servers file: the rendered ConfigMap's, else mcp.serversFile; empty means injection off. */}}
{{- define "aibridge.mcpServersFile" -}}
{{- if .Values.mcp.servers }}/etc/aibridge/mcp/servers.yaml{{ else }}{{ .Values.mcp.serversFile }}{{ end }}
{{- end }}

{{/* The Secret holding an MCP server's token file, if its auth names one. */}}
{{- define "aibridge.mcpTokenSecret" -}}
{{- $auth := .auth | default dict }}
{{- toJson ($auth.tokenSecret | default $auth.discoveryTokenSecret | default dict) }}
{{- end }}
