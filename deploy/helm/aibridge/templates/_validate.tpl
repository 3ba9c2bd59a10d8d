{{/* Every check that must hold before anything renders; each fails with the value to set. */}}
{{- define "aibridge.validate" -}}
{{- $kafka := .Values.kafka }}
{{- if not $kafka.bootstrap }}
{{- fail "aibridge: kafka.bootstrap is required: the bootstrap servers of your Kafka cluster, e.g. --set kafka.bootstrap=kafka.kafka.svc:9092" }}
{{- end }}
{{- if and $kafka.sasl.mechanism (not $kafka.sasl.username) }}
{{- fail "aibridge: kafka.sasl.mechanism is set but kafka.sasl.username is empty" }}
{{- end }}
{{- if and $kafka.sasl.mechanism (not (hasPrefix "SASL_" $kafka.securityProtocol)) }}
{{- fail (printf "aibridge: kafka.sasl.mechanism needs kafka.securityProtocol SASL_PLAINTEXT or SASL_SSL (it is %s)" $kafka.securityProtocol) }}
{{- end }}
{{- if and $kafka.sasl.mechanism (not $kafka.sasl.existingSecret) (not $kafka.sasl.password) }}
{{- fail "aibridge: kafka.sasl.mechanism is set: set kafka.sasl.password or kafka.sasl.existingSecret" }}
{{- end }}
{{- if and $kafka.tls.existingSecret (not (hasSuffix "SSL" $kafka.securityProtocol)) }}
{{- fail (printf "aibridge: kafka.tls.existingSecret needs kafka.securityProtocol SSL or SASL_SSL (it is %s)" $kafka.securityProtocol) }}
{{- end }}
{{- if and $kafka.tls.existingSecret (not (eq (empty $kafka.tls.keyKey) (empty $kafka.tls.certKey))) }}
{{- fail "aibridge: set kafka.tls.certKey and kafka.tls.keyKey together (the client certificate and its key)" }}
{{- end }}
{{- $tls := .Values.clickhouse.tls }}
{{- if and $tls.existingSecret (not (hasPrefix "https://" .Values.clickhouse.url)) }}
{{- fail "aibridge: clickhouse.tls.existingSecret needs an https:// clickhouse.url" }}
{{- end }}
{{- if and $tls.existingSecret (not (eq (empty $tls.keyKey) (empty $tls.certKey))) }}
{{- fail "aibridge: set clickhouse.tls.certKey and clickhouse.tls.keyKey together (the client certificate and its key)" }}
{{- end }}
{{- $url := .Values.clickhouse.url }}
{{- if not $url }}
{{- fail "aibridge: clickhouse.url is required: the HTTP(S) interface of your ClickHouse server, e.g. --set clickhouse.url=http://clickhouse.db.svc:8123" }}
{{- end }}
{{- if hasPrefix "chdb:" $url }}
{{- fail (printf "aibridge: clickhouse.url %s is the embedded engine (chDB), which allows one process per data directory; the chart runs several, so point clickhouse.url at a ClickHouse server (http:// or https://). For a single process use `aibridge up`." $url) }}
{{- end }}
{{- $parsed := urlParse $url }}
{{- if not (has $parsed.scheme (list "http" "https")) }}
{{- fail (printf "aibridge: clickhouse.url must start with http:// or https:// (got %q)" $url) }}
{{- end }}
{{- if $parsed.userinfo }}
{{- fail "aibridge: clickhouse.url must not contain credentials (they would show in the pod spec): set clickhouse.username/clickhouse.password or clickhouse.existingSecret" }}
{{- end }}
{{- if not (or .Values.auth.publicKey .Values.auth.existingSecret) }}
{{- fail "aibridge: the token public key is required: --set-file auth.publicKey=signing_key.pub.pem (from `aibridge token keygen`) or set auth.existingSecret" }}
{{- end }}
{{- if and .Values.oidc.issuer (not .Values.oidc.audience) }}
{{- fail "aibridge: oidc.audience is required with oidc.issuer (the 'aud' the provider's tokens must name)" }}
{{- end }}
{{- if and .Values.auth.publicKey (not (contains "BEGIN PUBLIC KEY" .Values.auth.publicKey)) }}
{{- fail "aibridge: auth.publicKey must be the PEM text of signing_key.pub.pem (-----BEGIN PUBLIC KEY-----); never the private key" }}
{{- end }}
{{- range $component := list "proxy" "recorder" "api" }}
{{- $autoscaling := (index $.Values $component).autoscaling }}
{{- if and $autoscaling.enabled (gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) }}
{{- fail (printf "aibridge: %s.autoscaling.minReplicas (%d) is greater than maxReplicas (%d)" $component (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
