{{/*
The environment of a service's container, all of it read by the services' settings
(docs/configuration.md): (dict "root" $ "svc" "order"). PGPASSWORD is libpq's own.
*/}}
{{- define "paysaga.databaseEnv" -}}
{{- $root := .root -}}
{{- $c := index (fromYaml (include "paysaga.components" $root)) .svc -}}
{{- if $root.Values.database.cnpg.enabled }}
- name: {{ $c.prefix }}_DATABASE_URL
  value: {{ printf "postgresql+psycopg://paysaga_%s@%s-rw:5432/paysaga_%s?sslmode=verify-full&sslrootcert=/etc/paysaga/pg-ca/ca.crt" .svc (include "paysaga.cnpgCluster" $root) .svc | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ printf "%s-%s" (include "paysaga.cnpgCluster" $root) .svc }}
      key: password
{{- else }}
- name: {{ $c.prefix }}_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "paysaga.databaseSecret" $root }}
      key: {{ index $root.Values.database (printf "%sKey" .svc) }}
{{- end }}
- name: {{ $c.prefix }}_LOG_FORMAT
  value: {{ $root.Values.logFormat | quote }}
- name: {{ $c.prefix }}_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
{{- end -}}

{{- define "paysaga.serviceEnv" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $values := index $v .svc -}}
{{- $c := index (fromYaml (include "paysaga.components" $root)) .svc -}}
{{- include "paysaga.databaseEnv" . }}
- name: {{ $c.prefix }}_GRPC_ADDRESS
  value: {{ printf "0.0.0.0:%v" $values.ports.grpc | quote }}
- name: {{ $c.prefix }}_HEALTH_ADDRESS
  value: {{ printf "0.0.0.0:%v" $values.ports.health | quote }}
- name: {{ $c.prefix }}_METRICS_ADDRESS
  value: {{ printf "0.0.0.0:%v" $values.ports.metrics | quote }}
- name: {{ $c.prefix }}_CONSUMER_GROUP
  value: {{ $c.consumerGroup | quote }}
- name: {{ $c.prefix }}_DATABASE_POOL_SIZE
  value: {{ $v.database.poolSize | quote }}
- name: {{ $c.prefix }}_SHUTDOWN_DRAIN_S
  value: {{ $v.shutdown.drainSeconds | quote }}
- name: {{ $c.prefix }}_SHUTDOWN_GRACE_S
  value: {{ $v.shutdown.graceSeconds | quote }}
{{- if $v.staticMembership }}
- name: {{ $c.prefix }}_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "paysaga.kafkaBootstrap" $root | quote }}
{{- if $v.kafka.securityProtocol }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- end }}
{{- if eq (include "paysaga.kafkaSasl" $root) "true" }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $v.kafka.saslMechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ $v.kafka.username | quote }}
- name: KAFKA_SASL_PASSWORD_FILE
  value: /etc/paysaga/kafka/password
{{- end }}
{{- if eq (include "paysaga.kafkaTls" $root) "true" }}
- name: KAFKA_SSL_CA_LOCATION
  value: /etc/paysaga/kafka/ca.crt
{{- end }}
{{- range $name, $value := $v.kafka.config }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
- name: PAYSAGA_INSECURE
  value: {{ $v.insecure | quote }}
- name: PAYSAGA_GRPC_REFLECTION
  value: {{ $v.reflection | quote }}
{{- if $v.tls.enabled }}
- name: PAYSAGA_TLS_CERT_FILE
  value: /etc/paysaga/tls/tls.crt
- name: PAYSAGA_TLS_KEY_FILE
  value: /etc/paysaga/tls/tls.key
{{- if $v.tls.clientAuth }}
- name: PAYSAGA_TLS_CLIENT_CA_FILE
  value: /etc/paysaga/tls/ca.crt
{{- end }}
{{- end }}
- name: PAYSAGA_AUTH_ENABLED
  value: {{ $v.auth.enabled | quote }}
{{- if $v.auth.enabled }}
- name: {{ include "paysaga.authKeyEnv" $root }}
  value: /etc/paysaga/auth/key
- name: PAYSAGA_AUTH_ISSUER
  value: {{ $v.auth.issuer | quote }}
- name: PAYSAGA_AUTH_AUDIENCE
  value: {{ $v.auth.audience | quote }}
- name: PAYSAGA_AUTH_OPERATOR_SCOPE
  value: {{ $v.auth.operatorScope | quote }}
- name: PAYSAGA_AUTH_PUBLIC_HEALTH
  value: {{ $v.auth.publicHealth | quote }}
- name: PAYSAGA_AUTH_PUBLIC_REFLECTION
  value: {{ $v.auth.publicReflection | quote }}
{{- end }}
{{- if $v.tracing.exporter }}
- name: OTEL_TRACES_EXPORTER
  value: {{ $v.tracing.exporter | quote }}
{{- with $v.tracing.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $v.tracing.sampler | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,service.namespace=%s" $root.Release.Namespace $root.Release.Name | quote }}
{{- end }}
{{- range $name, $value := $values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The volumes the services' containers mount: secrets as files, /tmp. */}}
{{- define "paysaga.volumes" -}}
{{- $v := .Values -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $v.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "paysaga.tlsSecret" . }}
    defaultMode: 0440
{{- end }}
{{- if $v.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "paysaga.authSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ if $v.auth.key }}key{{ else }}{{ $v.auth.secretKey }}{{ end }}
        path: key
{{- end }}
{{- if or (eq (include "paysaga.kafkaSasl" .) "true") (eq (include "paysaga.kafkaTls" .) "true") }}
- name: kafka
  projected:
    defaultMode: 0440
    sources:
{{- if eq (include "paysaga.kafkaSasl" .) "true" }}
      - secret:
          name: {{ include "paysaga.kafkaPasswordSecret" . }}
          items:
            - key: {{ include "paysaga.kafkaPasswordKey" . }}
              path: password
{{- end }}
{{- if eq (include "paysaga.kafkaTls" .) "true" }}
      - secret:
          name: {{ include "paysaga.kafkaCaSecret" . }}
          items:
            - key: {{ include "paysaga.kafkaCaKey" . }}
              path: ca.crt
{{- end }}
{{- end }}
{{- if $v.database.cnpg.enabled }}
- name: pg-ca
  secret:
    secretName: {{ printf "%s-ca" (include "paysaga.cnpgCluster" .) }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "paysaga.volumeMounts" -}}
{{- $v := .Values -}}
- name: tmp
  mountPath: /tmp
{{- if $v.tls.enabled }}
- name: tls
  mountPath: /etc/paysaga/tls
  readOnly: true
{{- end }}
{{- if $v.auth.enabled }}
- name: auth
  mountPath: /etc/paysaga/auth
  readOnly: true
{{- end }}
{{- if or (eq (include "paysaga.kafkaSasl" .) "true") (eq (include "paysaga.kafkaTls" .) "true") }}
- name: kafka
  mountPath: /etc/paysaga/kafka
  readOnly: true
{{- end }}
{{- if $v.database.cnpg.enabled }}
- name: pg-ca
  mountPath: /etc/paysaga/pg-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "paysaga.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "paysaga.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
