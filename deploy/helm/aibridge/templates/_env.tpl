{{/* Environment of a component: (dict "root" $ "component" "proxy"). Later entries win. */}}
{{- define "aibridge.env" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $component := .component }}
- name: AIBRIDGE_AUTH_PUBLIC_KEY_FILE
  value: /etc/aibridge/auth/public-key.pem
- name: AIBRIDGE_AUTH_REVOKED_FILE
  value: /etc/aibridge/revoked/revoked-token-ids
- name: AIBRIDGE_STRUCTURED_LOGS
  value: {{ $values.logging.structured | quote }}
- name: AIBRIDGE_LOG_LEVEL
  value: {{ $values.logging.level | quote }}
- name: AIBRIDGE_TRACE_ENABLE
  value: {{ $values.tracing.enabled | quote }}
- name: AIBRIDGE_TRACE_LOGS
  value: {{ $values.tracing.logs | quote }}
{{- if $values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $values.tracing.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $values.tracing.otlpProtocol | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "aibridge-%s" $component | quote }}
{{- if has $component (list "proxy" "recorder") }}
{{ include "aibridge.env.kafka" $root }}
{{- end }}
{{- if has $component (list "recorder" "api") }}
{{ include "aibridge.env.store" $root }}
{{- end }}
{{- if eq $component "proxy" }}
{{ include "aibridge.env.proxy" $root }}
{{- end }}
{{- range $name, $value := $values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $name, $value := (index $values $component).env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with (index $values $component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aibridge.env.kafka" -}}
{{- $kafka := .Values.kafka }}
- name: AIBRIDGE_KAFKA_BOOTSTRAP
  value: {{ $kafka.bootstrap | quote }}
- name: AIBRIDGE_KAFKA_TOPIC
  value: {{ $kafka.topic | quote }}
- name: AIBRIDGE_KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
- name: AIBRIDGE_KAFKA_COMPRESSION
  value: {{ $kafka.compression | default "lz4" | quote }}
{{- if $kafka.sasl.mechanism }}
- name: AIBRIDGE_KAFKA_SASL_MECHANISM
  value: {{ $kafka.sasl.mechanism | quote }}
- name: AIBRIDGE_KAFKA_SASL_USERNAME
  value: {{ $kafka.sasl.username | quote }}
- name: AIBRIDGE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret | default (include "aibridge.secretName" .) }}
      key: {{ ternary $kafka.sasl.existingSecretPasswordKey "kafka-sasl-password" (not (empty $kafka.sasl.existingSecret)) }}
{{- end }}
{{- end }}

{{/* The URL gets its credentials from the two variables before it (Kubernetes expands $(NAME)). */}}
{{- define "aibridge.env.store" -}}
{{- $clickhouse := .Values.clickhouse }}
{{- $url := urlParse $clickhouse.url }}
{{- if include "aibridge.clickhouseCredentials" . }}
{{- $secret := $clickhouse.existingSecret | default (include "aibridge.secretName" .) }}
- name: AIBRIDGE_STORE_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $clickhouse.existingSecretUsernameKey "clickhouse-username" (not (empty $clickhouse.existingSecret)) }}
- name: AIBRIDGE_STORE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $clickhouse.existingSecretPasswordKey "clickhouse-password" (not (empty $clickhouse.existingSecret)) }}
- name: AIBRIDGE_CLICKHOUSE_URL
  value: {{ printf "%s://$(AIBRIDGE_STORE_USERNAME):$(AIBRIDGE_STORE_PASSWORD)@%s%s" $url.scheme $url.host $url.path | quote }}
{{- else }}
- name: AIBRIDGE_CLICKHOUSE_URL
  value: {{ $clickhouse.url | quote }}
{{- end }}
- name: AIBRIDGE_CLICKHOUSE_DATABASE
  value: {{ $clickhouse.database | quote }}
- name: AIBRIDGE_RETENTION
  value: {{ .Values.retention | toString | quote }}
{{- end }}

{{- define "aibridge.env.proxy" -}}
{{- range $name, $provider := .Values.providers }}
{{- $prefix := printf "AIBRIDGE_%s" (upper $name) }}
{{- if include "aibridge.providerConfigured" (dict "provider" $provider) }}
- name: {{ $prefix }}_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $provider.existingSecret | default (include "aibridge.secretName" $) }}
      key: {{ ternary $provider.existingSecretKey (printf "%s-api-key" $name) (not (empty $provider.existingSecret)) }}
{{- end }}
{{- if $provider.baseUrl }}
- name: {{ $prefix }}_BASE_URL
  value: {{ $provider.baseUrl | quote }}
{{- end }}
{{- end }}
- name: AIBRIDGE_MAX_RPS
  value: {{ .Values.rateLimits.maxRps | toString | quote }}
- name: AIBRIDGE_MAX_CONCURRENT
  value: {{ .Values.rateLimits.maxConcurrent | toString | quote }}
- name: AIBRIDGE_USER_MAX_RPM
  value: {{ .Values.rateLimits.userMaxRpm | toString | quote }}
{{- if .Values.spool.enabled }}
- name: AIBRIDGE_SPOOL_DIR
  value: /var/lib/aibridge/spool
- name: AIBRIDGE_SPOOL_MAX_BYTES
  value: {{ .Values.spool.maxBytes | int64 | toString | quote }}
{{- end }}
{{- end }}
