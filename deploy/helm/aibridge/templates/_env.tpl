{{/* Environment of a component: (dict "root" $ "component" "proxy"). Later entries win. */}}
{{- define "aibridge.env" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $component := .component }}
- name: AIBRIDGE_AUTH_PUBLIC_KEY_FILE
  value: /etc/aibridge/auth/public-key.pem
- name: AIBRIDGE_AUTH_REVOKED_FILE
  value: /etc/aibridge/revoked/revoked-token-ids
{{- if and $values.oidc.issuer (has $component (list "proxy" "api")) }}
{{ include "aibridge.env.oidc" $root }}
{{- end }}
{{- if $values.spend.prices }}
- name: AIBRIDGE_PRICES_FILE
  value: /etc/aibridge/spend/prices.yaml
{{- end }}
{{- if $values.spend.groups }}
- name: AIBRIDGE_GROUPS_FILE
  value: /etc/aibridge/spend/groups.yaml
{{- end }}
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
- name: AIBRIDGE_MAX_HEADER_BYTES
  value: {{ $values.requestLimits.maxHeaderBytes | int64 | toString | quote }}
- name: AIBRIDGE_MAX_HEADERS
  value: {{ $values.requestLimits.maxHeaders | int64 | toString | quote }}
{{- if has $component (list "proxy" "recorder" "api") }}
{{ include "aibridge.env.kafka" $root }}
{{- end }}
{{- if eq $component "api" }}
{{ include "aibridge.env.audit" $root }}
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

{{- define "aibridge.env.oidc" -}}
{{- $oidc := .Values.oidc }}
- name: AIBRIDGE_OIDC_ISSUER
  value: {{ $oidc.issuer | quote }}
- name: AIBRIDGE_OIDC_AUDIENCE
  value: {{ $oidc.audience | quote }}
- name: AIBRIDGE_OIDC_USER_ID_CLAIM
  value: {{ $oidc.userIdClaim | quote }}
- name: AIBRIDGE_OIDC_USERNAME_CLAIMS
  value: {{ join "," $oidc.usernameClaims | quote }}
- name: AIBRIDGE_OIDC_GROUPS_CLAIM
  value: {{ $oidc.groupsClaim | quote }}
- name: AIBRIDGE_OIDC_AUDITOR_GROUPS
  value: {{ join "," $oidc.auditorGroups | quote }}
- name: AIBRIDGE_OIDC_ADMIN_GROUPS
  value: {{ join "," $oidc.adminGroups | quote }}
- name: AIBRIDGE_OIDC_LEEWAY
  value: {{ $oidc.leeway | quote }}
- name: AIBRIDGE_OIDC_JWKS_REFETCH_INTERVAL
  value: {{ $oidc.jwksRefetchInterval | quote }}
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
{{- if hasSuffix "SSL" $kafka.securityProtocol }}
- name: AIBRIDGE_KAFKA_SSL_CHECK_HOSTNAME
  value: {{ $kafka.tls.checkHostname | quote }}
{{- with $kafka.tls.existingSecret }}
{{- $dir := "/etc/aibridge/kafka-tls" }}
{{- if $kafka.tls.caKey }}
- name: AIBRIDGE_KAFKA_SSL_CAFILE
  value: {{ printf "%s/%s" $dir $kafka.tls.caKey | quote }}
{{- end }}
{{- if $kafka.tls.certKey }}
- name: AIBRIDGE_KAFKA_SSL_CERTFILE
  value: {{ printf "%s/%s" $dir $kafka.tls.certKey | quote }}
{{- end }}
{{- if $kafka.tls.keyKey }}
- name: AIBRIDGE_KAFKA_SSL_KEYFILE
  value: {{ printf "%s/%s" $dir $kafka.tls.keyKey | quote }}
{{- end }}
{{- if $kafka.tls.keyPasswordKey }}
- name: AIBRIDGE_KAFKA_SSL_KEY_PASSWORD_FILE
  value: {{ printf "%s/%s" $dir $kafka.tls.keyPasswordKey | quote }}
{{- end }}
{{- end }}
{{- end }}
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

{{- define "aibridge.env.store" -}}
{{- $clickhouse := .Values.clickhouse }}
- name: AIBRIDGE_CLICKHOUSE_URL
  value: {{ $clickhouse.url | quote }}
{{- if include "aibridge.clickhouseCredentials" . }}
{{- $secret := $clickhouse.existingSecret | default (include "aibridge.secretName" .) }}
- name: AIBRIDGE_CLICKHOUSE_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $clickhouse.existingSecretUsernameKey "clickhouse-username" (not (empty $clickhouse.existingSecret)) }}
- name: AIBRIDGE_CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $clickhouse.existingSecretPasswordKey "clickhouse-password" (not (empty $clickhouse.existingSecret)) }}
{{- end }}
{{- with $clickhouse.tls.existingSecret }}
{{- $dir := "/etc/aibridge/clickhouse-tls" }}
{{- if $clickhouse.tls.caKey }}
- name: AIBRIDGE_CLICKHOUSE_CA_FILE
  value: {{ printf "%s/%s" $dir $clickhouse.tls.caKey | quote }}
{{- end }}
{{- if $clickhouse.tls.certKey }}
- name: AIBRIDGE_CLICKHOUSE_CLIENT_CERT_FILE
  value: {{ printf "%s/%s" $dir $clickhouse.tls.certKey | quote }}
- name: AIBRIDGE_CLICKHOUSE_CLIENT_KEY_FILE
  value: {{ printf "%s/%s" $dir $clickhouse.tls.keyKey | quote }}
{{- end }}
{{- end }}
- name: AIBRIDGE_CLICKHOUSE_DATABASE
  value: {{ $clickhouse.database | quote }}
- name: AIBRIDGE_RETENTION
  value: {{ .Values.retention | toString | quote }}
{{- end }}

{{/* The API's access audit: who read whose prompts, to its own topic. */}}
{{- define "aibridge.env.audit" -}}
- name: AIBRIDGE_AUDIT_TOPIC
  value: {{ .Values.audit.topic | quote }}
- name: AIBRIDGE_API_TRUSTED_PROXIES
  value: {{ join "," .Values.audit.trustedProxies | quote }}
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
- name: AIBRIDGE_WORKERS
  value: {{ .Values.proxyWorkers | toString | quote }}
- name: AIBRIDGE_MAX_RPS
  value: {{ .Values.rateLimits.maxRps | toString | quote }}
- name: AIBRIDGE_MAX_CONCURRENT
  value: {{ .Values.rateLimits.maxConcurrent | toString | quote }}
- name: AIBRIDGE_USER_MAX_RPM
  value: {{ .Values.rateLimits.userMaxRpm | toString | quote }}
{{- if .Values.budgets.enabled }}
- name: AIBRIDGE_BUDGETS
  value: "true"
- name: AIBRIDGE_BUDGET_REFRESH_INTERVAL
  value: {{ .Values.budgets.refreshInterval | toString | quote }}
- name: AIBRIDGE_BUDGET_ALERTS_TOPIC
  value: {{ .Values.budgets.alertsTopic | quote }}
{{ include "aibridge.env.store" . }}
{{- end }}
- name: AIBRIDGE_MAX_BODY_BYTES
  value: {{ .Values.requestLimits.maxBodyBytes | int64 | toString | quote }}
- name: AIBRIDGE_PROMPT_CAPTURE
  value: {{ .Values.privacy.promptCapture | quote }}
{{- if .Values.privacy.redactionRulesFile }}
- name: AIBRIDGE_REDACTION_RULES_FILE
  value: {{ .Values.privacy.redactionRulesFile | quote }}
{{- end }}
{{- with include "aibridge.mcpServersFile" . }}
{{- $mcp := $.Values.mcp }}
- name: AIBRIDGE_MCP_SERVERS_FILE
  value: {{ . | quote }}
- name: AIBRIDGE_MCP_REFRESH_INTERVAL
  value: {{ $mcp.refreshInterval | toString | quote }}
- name: AIBRIDGE_MCP_CONNECT_TIMEOUT
  value: {{ $mcp.connectTimeout | toString | quote }}
- name: AIBRIDGE_MCP_CALL_TIMEOUT
  value: {{ $mcp.callTimeout | toString | quote }}
- name: AIBRIDGE_MCP_RESULT_MAX_BYTES
  value: {{ $mcp.resultMaxBytes | int64 | toString | quote }}
- name: AIBRIDGE_MCP_MAX_ROUNDS
  value: {{ $mcp.maxRounds | int64 | toString | quote }}
- name: AIBRIDGE_MCP_POOL_MAX_SESSIONS
  value: {{ $mcp.poolMaxSessions | int64 | toString | quote }}
- name: AIBRIDGE_MCP_POOL_IDLE_TIMEOUT
  value: {{ $mcp.poolIdleTimeout | toString | quote }}
{{- end }}
{{- if .Values.spool.enabled }}
- name: AIBRIDGE_SPOOL_DIR
  value: /var/lib/aibridge/spool
- name: AIBRIDGE_SPOOL_MAX_BYTES
  value: {{ .Values.spool.maxBytes | int64 | toString | quote }}
{{- end }}
{{- end }}
