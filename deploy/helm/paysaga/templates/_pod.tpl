{{/*
The pod template of a service's Deployment (deployment.yaml), one for every role:
(dict "root" $ "svc" "order" "component" "order" "role" "all" "resources" {...}).
`component` labels the pods (the Deployment's selector), `role` is the process's
(services/common/runtime/roles.py: all, api or worker), `resources` its container's.
The roles differ only in <SVC>_ROLE (unset for all, the default) and in readiness: a
worker serves no public API, so it reports no readiness under the service's name.
*/}}
{{- define "paysaga.podTemplate" -}}
{{- $ := .root -}}
{{- $svc := .svc -}}
{{- $values := index $.Values $svc -}}
{{- $c := index (fromYaml (include "paysaga.components" $)) $svc -}}
{{- $ctx := dict "root" $ "svc" $svc "component" .component -}}
metadata:
  labels:
    {{- include "paysaga.selectorLabels" $ctx | nindent 4 }}
    {{- with $.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed Secret the chart makes restarts the replicas.
    checksum/secrets: {{ include (print $.Template.BasePath "/secrets.yaml") $ | sha256sum }}
    {{- with $.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  automountServiceAccountToken: false
  {{- with $.Values.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # drain + 2 x grace + margin: the replica's own shutdown (shutdown.* in values.yaml)
  # always ends before the kubelet would kill it.
  terminationGracePeriodSeconds: {{ include "paysaga.terminationGracePeriodSeconds" $ }}
  securityContext:
    {{- include "paysaga.podSecurityContext" $ | nindent 4 }}
  {{- if and $.Values.database.cnpg.enabled $.Values.migration.enabled }}
  # The release makes the database, after the pre-install hooks: on install the schema
  # step runs here (concurrent runs queue on a lock), and as a hook before upgrades.
  initContainers:
    - name: migrate
      image: {{ include "paysaga.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args: ["python", "-m", {{ $c.module | quote }}, "migrate"]
      env:
        {{- include "paysaga.databaseEnv" $ctx | trim | nindent 8 }}
      resources:
        {{- toYaml $.Values.migration.resources | nindent 8 }}
      securityContext:
        {{- include "paysaga.containerSecurityContext" $ | nindent 8 }}
      volumeMounts:
        {{- include "paysaga.volumeMounts" $ | nindent 8 }}
  {{- end }}
  containers:
    - name: {{ $svc }}
      image: {{ include "paysaga.image" $ }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args: ["python", "-m", {{ $c.module | quote }}, "serve"]
      ports:
        - name: grpc
          containerPort: {{ $values.ports.grpc }}
          protocol: TCP
        - name: health
          containerPort: {{ $values.ports.health }}
          protocol: TCP
        - name: metrics
          containerPort: {{ $values.ports.metrics }}
          protocol: TCP
      env:
        {{- include "paysaga.serviceEnv" $ctx | trim | nindent 8 }}
        {{- if ne .role "all" }}
        - name: {{ $c.prefix }}_ROLE
          value: {{ .role | quote }}
        {{- end }}
      # The kubelet's own gRPC probes, on the plaintext health port.
      startupProbe:
        grpc:
          port: {{ $values.ports.health }}
          service: {{ include "paysaga.livenessHealthName" $ }}
        periodSeconds: {{ $.Values.probes.startup.periodSeconds }}
        failureThreshold: {{ $.Values.probes.startup.failureThreshold }}
      livenessProbe:
        grpc:
          port: {{ $values.ports.health }}
          service: {{ include "paysaga.livenessHealthName" $ }}
        periodSeconds: {{ $.Values.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ $.Values.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ $.Values.probes.liveness.failureThreshold }}
      readinessProbe:
        grpc:
          port: {{ $values.ports.health }}
          service: {{ if eq .role "worker" }}{{ include "paysaga.workerReadinessHealthName" $ }}{{ else }}{{ $c.grpcService }}{{ end }}
        periodSeconds: {{ $.Values.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ $.Values.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ $.Values.probes.readiness.failureThreshold }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- include "paysaga.containerSecurityContext" $ | nindent 8 }}
      volumeMounts:
        {{- include "paysaga.volumeMounts" $ | nindent 8 }}
  volumes:
    {{- include "paysaga.volumes" $ | nindent 4 }}
  {{- if $.Values.topologySpread.enabled }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: {{ $.Values.topologySpread.zone }}
      labelSelector:
        matchLabels:
          {{- include "paysaga.selectorLabels" $ctx | nindent 10 }}
      matchLabelKeys: [pod-template-hash]
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: {{ $.Values.topologySpread.node }}
      labelSelector:
        matchLabels:
          {{- include "paysaga.selectorLabels" $ctx | nindent 10 }}
      matchLabelKeys: [pod-template-hash]
  {{- end }}
  {{- with $.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
