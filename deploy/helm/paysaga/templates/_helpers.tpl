{{/*
Names, labels, and the two services as the code defines them. tests/unit/deploy/test_helm_chart.py
renders the chart and checks these against the code: the settings classes, the health names,
the topic table.
*/}}

{{- define "paysaga.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "paysaga.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "paysaga.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "paysaga.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paysaga
{{- end -}}

{{/*
Selector labels of one service's pods: (dict "root" $ "svc" "order"), or of one of its
Deployments: (dict "root" $ "svc" "order" "component" "order-worker").
*/}}
{{- define "paysaga.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paysaga.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component | default .svc }}
{{- end -}}

{{/*
The Deployments of one service, by role (services/common/runtime/roles.py), as YAML to
fromYaml: (dict "root" $ "svc" "order"). roles=all: one, `<fullname>-order`, whose pods run
role all (no ORDER_ROLE set: all is the default). roles=split: `<fullname>-order` runs role
api, the pods the Services select; `<fullname>-order-worker` runs role worker, labelled
component `order-worker`, with the replicas, resources and autoscaling of `order.worker`.
Each: name, component (its pods' label), role.
*/}}
{{- define "paysaga.deployments" -}}
{{- $name := printf "%s-%s" (include "paysaga.fullname" .root) .svc -}}
{{- if eq .root.Values.roles "split" }}
api:
  name: {{ $name }}
  component: {{ .svc }}
  role: api
worker:
  name: {{ $name }}-worker
  component: {{ .svc }}-worker
  role: worker
{{- else }}
all:
  name: {{ $name }}
  component: {{ .svc }}
  role: all
{{- end }}
{{- end -}}

{{/* The components of both services' pods, a YAML flow list, for the monitors' selectors. */}}
{{- define "paysaga.podComponents" -}}
{{- $components := list -}}
{{- range $svc := list "order" "payment" -}}
{{- range $role, $d := fromYaml (include "paysaga.deployments" (dict "root" $ "svc" $svc)) -}}
{{- $components = append $components $d.component -}}
{{- end -}}
{{- end -}}
[{{ join ", " $components }}]
{{- end -}}

{{/*
The services: the module each replica runs, its settings' env prefix, the gRPC service name
its readiness is reported under, its consumer group and the topics that group consumes
(services/order/__main__.py, services/payment/__main__.py).
*/}}
{{- define "paysaga.components" -}}
order:
  module: services.order
  prefix: ORDER
  grpcService: paysaga.v1.OrderService
  consumerGroup: paysaga-order
  consumes: [transactions]
payment:
  module: services.payment
  prefix: PAYMENT
  grpcService: paysaga.v1.PaymentService
  consumerGroup: paysaga-payment
  consumes: [orders, payments]
{{- end -}}

{{/* Health name of liveness (services/common/serving/grpc_app.py LIVENESS). */}}
{{- define "paysaga.livenessHealthName" -}}paysaga.liveness{{- end -}}

{{/*
Health name of a worker's readiness: a worker serves no public API, so not the service's
name; the admin API's (services/common/operations/admin.py SERVICE_NAME), which, like "",
reports readiness (the database answers: services/common/runtime/assembly.py).
*/}}
{{- define "paysaga.workerReadinessHealthName" -}}paysaga.admin.v1.AdminService{{- end -}}

{{- define "paysaga.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Seconds the kubelet waits after SIGTERM: drain + in-flight grace + worker grace + margin. */}}
{{- define "paysaga.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown -}}
{{- add (int $s.drainSeconds) (mul 2 (int $s.graceSeconds)) (int $s.marginSeconds) -}}
{{- end -}}

{{/* The Kafka bootstrap address: the chart's Strimzi cluster's TLS listener, or the value. */}}
{{- define "paysaga.kafkaBootstrap" -}}
{{- if and .Values.kafka.strimzi.enabled .Values.kafka.strimzi.createCluster -}}
{{- printf "%s-kafka-bootstrap:9093" .Values.kafka.strimzi.clusterName -}}
{{- else -}}
{{- required "kafka.bootstrapServers: where is Kafka? (or kafka.strimzi.enabled)" .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "paysaga.kafkaPasswordSecret" -}}
{{- if .Values.kafka.password -}}
{{- printf "%s-kafka" (include "paysaga.fullname" .) -}}
{{- else if .Values.kafka.strimzi.enabled -}}
{{- .Values.kafka.username -}}
{{- else -}}
{{- .Values.kafka.passwordSecret.name -}}
{{- end -}}
{{- end -}}

{{- define "paysaga.kafkaPasswordKey" -}}
{{- if or .Values.kafka.password .Values.kafka.strimzi.enabled -}}password{{- else -}}{{ .Values.kafka.passwordSecret.key }}{{- end -}}
{{- end -}}

{{- define "paysaga.kafkaCaSecret" -}}
{{- if and .Values.kafka.strimzi.enabled .Values.kafka.strimzi.createCluster -}}
{{- printf "%s-cluster-ca-cert" .Values.kafka.strimzi.clusterName -}}
{{- else -}}
{{- .Values.kafka.caSecret.name -}}
{{- end -}}
{{- end -}}

{{- define "paysaga.kafkaCaKey" -}}
{{- if and .Values.kafka.strimzi.enabled .Values.kafka.strimzi.createCluster -}}ca.crt{{- else -}}{{ .Values.kafka.caSecret.key }}{{- end -}}
{{- end -}}

{{- define "paysaga.kafkaSasl" -}}
{{- hasPrefix "SASL" .Values.kafka.securityProtocol -}}
{{- end -}}

{{/* KEDA's name for the SASL mechanism (its Kafka scaler's `sasl`). */}}
{{- define "paysaga.kedaSasl" -}}
{{- $names := dict "SCRAM-SHA-512" "scram_sha512" "SCRAM-SHA-256" "scram_sha256" "PLAIN" "plaintext" "OAUTHBEARER" "oauthbearer" "GSSAPI" "gssapi" -}}
{{- required (printf "kafka.saslMechanism %q: KEDA knows SCRAM-SHA-512, SCRAM-SHA-256, PLAIN, OAUTHBEARER, GSSAPI" .Values.kafka.saslMechanism) (get $names .Values.kafka.saslMechanism) -}}
{{- end -}}

{{- define "paysaga.kafkaTls" -}}
{{- or (eq .Values.kafka.securityProtocol "SSL") (eq .Values.kafka.securityProtocol "SASL_SSL") -}}
{{- end -}}

{{/* The Secret holding the database URLs (none with CloudNativePG: the URL names no password). */}}
{{- define "paysaga.databaseSecret" -}}
{{- if or .Values.database.orderUrl .Values.database.paymentUrl -}}
{{- printf "%s-database" (include "paysaga.fullname" .) -}}
{{- else -}}
{{- required "database.existingSecret: the Secret with the database URLs (or database.orderUrl and paymentUrl, or database.cnpg.enabled)" .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "paysaga.cnpgCluster" -}}
{{- printf "%s-pg" (include "paysaga.fullname" .) -}}
{{- end -}}

{{- define "paysaga.tlsSecret" -}}
{{- if .Values.tls.cert -}}
{{- printf "%s-tls" (include "paysaga.fullname" .) -}}
{{- else -}}
{{- required "tls.existingSecret: a kubernetes.io/tls Secret (or tls.cert and tls.key, or tls.enabled=false with insecure=true)" .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "paysaga.authSecret" -}}
{{- if .Values.auth.key -}}
{{- printf "%s-auth" (include "paysaga.fullname" .) -}}
{{- else -}}
{{- required "auth.existingSecret: the Secret with the token verification key (or auth.key, or auth.enabled=false with insecure=true)" .Values.auth.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The environment variable that points at the token key file, by auth.keyType. */}}
{{- define "paysaga.authKeyEnv" -}}
{{- $kinds := dict "jwks" "PAYSAGA_AUTH_JWKS_FILE" "publicKey" "PAYSAGA_AUTH_PUBLIC_KEY_FILE" "hs256" "PAYSAGA_AUTH_HS256_SECRET_FILE" -}}
{{- required (printf "auth.keyType %q: one of jwks, publicKey, hs256" .Values.auth.keyType) (get $kinds .Values.auth.keyType) -}}
{{- end -}}

{{- define "paysaga.checkValues" -}}
{{- if and (not .Values.insecure) (not (and .Values.tls.enabled .Values.auth.enabled)) -}}
{{- fail "tls.enabled and auth.enabled are off: the services refuse to serve off loopback without both. Turn them on, or set insecure=true (a private network you trust, or a mesh that does both)." -}}
{{- end -}}
{{- range $svc := list "order" "payment" -}}
{{- $values := index $.Values $svc -}}
{{- $c := index (fromYaml (include "paysaga.components" $)) $svc -}}
{{- /* KEDA scales the Deployment that consumes: the workers when split. */ -}}
{{- $scaled := ternary (printf "%s.worker" $svc) $svc (eq $.Values.roles "split") -}}
{{- $autoscaling := ternary $values.worker.autoscaling $values.autoscaling (eq $.Values.roles "split") -}}
{{- if and $.Values.keda.enabled (gt (int $autoscaling.maxReplicas) (int $.Values.kafka.partitions)) -}}
{{- fail (printf "%s.autoscaling.maxReplicas %v is above kafka.partitions %v: a consumer group gives each partition to one replica, the others would only idle. Raise the partitions first." $scaled $autoscaling.maxReplicas $.Values.kafka.partitions) -}}
{{- end -}}
{{- if and $.Values.keda.enabled (gt (int $autoscaling.minReplicas) (int $autoscaling.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.minReplicas is above its maxReplicas" $scaled) -}}
{{- end -}}
{{- if hasKey $values.env (printf "%s_ROLE" $c.prefix) -}}
{{- fail (printf "%s.env sets %s_ROLE: choose the layout with roles (all or split) instead" $svc $c.prefix) -}}
{{- end -}}
{{- end -}}
{{- end -}}
