{{/* The Deployment of a component: (dict "root" $ "component" "proxy"). */}}
{{- define "aibridge.deployment" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $values := index $root.Values $component }}
{{- $port := include "aibridge.containerPort" $component }}
{{- /* The recorder and the API use the store; the proxy reads budgets and spend from it when budgets are on. */}}
{{- $readsStore := or (has $component (list "recorder" "api")) (and (eq $component "proxy") $root.Values.budgets.enabled) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "aibridge.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "aibridge.componentLabels" . | nindent 4 }}
spec:
  {{- if not $values.autoscaling.enabled }}
  replicas: {{ $values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "aibridge.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "aibridge.componentSelectorLabels" . | nindent 8 }}
        {{- with $values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        checksum/spend: {{ toJson $root.Values.spend | sha256sum }}
        {{- if eq $component "proxy" }}
        checksum/mcp: {{ toJson $root.Values.mcp | sha256sum }}
        {{- end }}
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "aibridge.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $component }}
          image: {{ include "aibridge.image" . | quote }}
          imagePullPolicy: {{ include "aibridge.imagePullPolicy" . }}
          args:
            - {{ $component }}
            - --listen
            - {{ printf "0.0.0.0:%s" $port | quote }}
            {{- with $values.args }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ $port }}
              protocol: TCP
          env:
            {{- include "aibridge.env" . | nindent 12 }}
          livenessProbe:
            {{- toYaml $values.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml $values.readinessProbe | nindent 12 }}
          startupProbe:
            {{- toYaml $values.startupProbe | nindent 12 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $values.securityContext | nindent 12 }}
          volumeMounts:
            - name: auth
              mountPath: /etc/aibridge/auth
              readOnly: true
            - name: revoked
              mountPath: /etc/aibridge/revoked
              readOnly: true
            {{- if or $root.Values.spend.prices $root.Values.spend.groups }}
            - name: spend
              mountPath: /etc/aibridge/spend
              readOnly: true
            {{- end }}
            - name: tmp
              mountPath: /tmp
            {{- if and (eq $component "proxy") $root.Values.spool.enabled }}
            - name: spool
              mountPath: /var/lib/aibridge/spool
            {{- end }}
            {{- if and (eq $component "proxy") $root.Values.mcp.servers }}
            - name: mcp-servers
              mountPath: /etc/aibridge/mcp
              readOnly: true
            {{- range $root.Values.mcp.servers }}
            {{- if ne (include "aibridge.mcpTokenSecret" .) "{}" }}
            - name: {{ printf "mcp-token-%s" .name }}
              mountPath: {{ printf "/etc/aibridge/mcp-tokens/%s" .name }}
              readOnly: true
            {{- end }}
            {{- end }}
            {{- end }}
            {{- if $root.Values.kafka.tls.existingSecret }}
            - name: kafka-tls
              mountPath: /etc/aibridge/kafka-tls
              readOnly: true
            {{- end }}
            {{- if and $readsStore $root.Values.clickhouse.tls.existingSecret }}
            - name: clickhouse-tls
              mountPath: /etc/aibridge/clickhouse-tls
              readOnly: true
            {{- end }}
            {{- with $values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: auth
          secret:
            secretName: {{ include "aibridge.authSecretName" $root }}
            items:
              - key: {{ include "aibridge.authSecretKey" $root }}
                path: public-key.pem
        - name: revoked
          configMap:
            name: {{ printf "%s-revoked-tokens" (include "aibridge.fullname" $root) }}
        {{- if or $root.Values.spend.prices $root.Values.spend.groups }}
        - name: spend
          configMap:
            name: {{ include "aibridge.spendConfigMapName" $root }}
        {{- end }}
        - name: tmp
          emptyDir: {}
        {{- if and (eq $component "proxy") $root.Values.spool.enabled }}
        - name: spool
          emptyDir:
            sizeLimit: {{ $root.Values.spool.sizeLimit }}
        {{- end }}
        {{- if and (eq $component "proxy") $root.Values.mcp.servers }}
        - name: mcp-servers
          configMap:
            name: {{ include "aibridge.mcpConfigMapName" $root }}
        {{- range $root.Values.mcp.servers }}
        {{- $secret := include "aibridge.mcpTokenSecret" . | fromJson }}
        {{- if $secret }}
        - name: {{ printf "mcp-token-%s" .name }}
          secret:
            secretName: {{ $secret.name }}
            defaultMode: 0440
            items:
              - key: {{ $secret.key }}
                path: token
        {{- end }}
        {{- end }}
        {{- end }}
        {{- if $root.Values.kafka.tls.existingSecret }}
        - name: kafka-tls
          secret:
            secretName: {{ $root.Values.kafka.tls.existingSecret }}
            defaultMode: 0440
        {{- end }}
        {{- if and $readsStore $root.Values.clickhouse.tls.existingSecret }}
        - name: clickhouse-tls
          secret:
            secretName: {{ $root.Values.clickhouse.tls.existingSecret }}
            defaultMode: 0440
        {{- end }}
        {{- with $values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* The Service of a component. */}}
{{- define "aibridge.service" -}}
{{- $values := index .root.Values .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "aibridge.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aibridge.componentLabels" . | nindent 4 }}
  {{- with $values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $values.service.type }}
  selector:
    {{- include "aibridge.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $values.service.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{/* The PodDisruptionBudget of a component, when enabled. */}}
{{- define "aibridge.pdb" -}}
{{- $pdb := (index .root.Values .component).pdb }}
{{- if $pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "aibridge.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aibridge.componentLabels" . | nindent 4 }}
spec:
  {{- if hasKey $pdb "minAvailable" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "aibridge.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* The HorizontalPodAutoscaler of a component, when enabled. */}}
{{- define "aibridge.hpa" -}}
{{- $autoscaling := (index .root.Values .component).autoscaling }}
{{- if $autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "aibridge.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aibridge.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "aibridge.componentName" . }}
  minReplicas: {{ $autoscaling.minReplicas }}
  maxReplicas: {{ $autoscaling.maxReplicas }}
  metrics:
    {{- if $autoscaling.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $autoscaling.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if $autoscaling.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $autoscaling.targetMemoryUtilizationPercentage }}
    {{- end }}
{{- end }}
{{- end }}

{{/* The ServiceMonitor of a component, when metrics.serviceMonitor.enabled. */}}
{{- define "aibridge.serviceMonitor" -}}
{{- $monitor := .root.Values.metrics.serviceMonitor }}
{{- if $monitor.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "aibridge.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "aibridge.componentLabels" . | nindent 4 }}
    {{- with $monitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "aibridge.componentSelectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ .root.Release.Namespace }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $monitor.interval }}
      scrapeTimeout: {{ $monitor.scrapeTimeout }}
{{- end }}
{{- end }}
