{{/* Names, labels and the facts every template shares. */}}

{{- define "edgelake-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgelake-node.fullname" -}}
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

{{/* Suffixed names stay within the 63 characters of a Service name. */}}
{{- define "edgelake-node.suffixed" -}}
{{- $base := include "edgelake-node.fullname" .ctx | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base .suffix }}
{{- end }}

{{- define "edgelake-node.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "edgelake-node.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
edgelake.io/node-type: {{ .Values.node.type }}
{{- end }}

{{- define "edgelake-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgelake-node.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edgelake-node.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgelake-node.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Default node ports by type, as the node's own set_params.al sets them (docs/checks.md; master-operator takes the
operator's, master-publisher the publisher's); tests/test_chart.py checks TCP and REST against the
sidecar's own defaults. The node starts a broker only when ANYLOG_BROKER_PORT is set: upstream's
deployments run masters, operators and queries without one.
*/}}
{{- define "edgelake-node.defaultPorts" -}}
master: {tcp: 32048, rest: 32049, broker: 0}
operator: {tcp: 32148, rest: 32149, broker: 0}
master-operator: {tcp: 32148, rest: 32149, broker: 0}
publisher: {tcp: 32248, rest: 32249, broker: 32250}
master-publisher: {tcp: 32248, rest: 32249, broker: 32250}
query: {tcp: 32348, rest: 32349, broker: 0}
generic: {tcp: 32548, rest: 32549, broker: 32550}
{{- end }}

{{/* The node's ports after the values' overrides, as YAML {tcp, rest, broker}; broker 0 means none. */}}
{{- define "edgelake-node.ports" -}}
{{- $defaults := index (include "edgelake-node.defaultPorts" . | fromYaml) .Values.node.type }}
{{- $p := .Values.node.ports }}
tcp: {{ ternary $defaults.tcp $p.tcp (kindIs "invalid" $p.tcp) | int }}
rest: {{ ternary $defaults.rest $p.rest (kindIs "invalid" $p.rest) | int }}
broker: {{ ternary $defaults.broker $p.broker (kindIs "invalid" $p.broker) | int }}
{{- end }}

{{/* Paths inside the pod. The published link and the sidecar's root share the scripts volume. */}}
{{- define "edgelake-node.scriptsLink" -}}
{{- printf "%s/deployment-scripts" (.Values.persistence.scripts.mountPath | trimSuffix "/") }}
{{- end }}
{{- define "edgelake-node.sidecarRoot" -}}
{{- printf "%s/.sidecar" (.Values.persistence.scripts.mountPath | trimSuffix "/") }}
{{- end }}
{{- define "edgelake-node.fallbackDir" -}}/var/lib/edgelake-sidecar/fallback{{- end }}
{{- define "edgelake-node.networkDir" -}}/run/edgelake{{- end }}
{{- define "edgelake-node.networkEnvFile" -}}/run/edgelake/network.env{{- end }}
{{- define "edgelake-node.gitSecretDir" -}}/etc/edgelake-sidecar/git{{- end }}
{{- define "edgelake-node.syncSecretDir" -}}/etc/edgelake-sidecar/sync{{- end }}

{{/*
The sidecar's metric names, in this one place: the PrometheusRule and the Grafana dashboard take
them from here. tests/test_chart.py checks them against sidecar/metrics.py once it exists.
*/}}
{{- define "edgelake-node.metricNames" -}}
checkUp: edgelake_sidecar_check_up
syncLastSuccess: edgelake_sidecar_scripts_last_success_timestamp_seconds
conflicts: edgelake_sidecar_scripts_conflict_files
syncs: edgelake_sidecar_scripts_syncs_total
syncFailures: edgelake_sidecar_scripts_sync_consecutive_failures
policyMatches: edgelake_sidecar_node_policy_matches
policies: edgelake_sidecar_node_policies
{{- end }}

{{/* An image reference: repository:tag, or repository:tag@digest when a digest is set. */}}
{{- define "edgelake-node.image" -}}
{{- $ref := printf "%s:%s" .image.repository (default .defaultTag .image.tag) }}
{{- if .image.digest }}{{ $ref = printf "%s@%s" $ref .image.digest }}{{ end }}
{{- $ref }}
{{- end }}
{{- define "edgelake-node.sidecarImage" -}}
{{- include "edgelake-node.image" (dict "image" .Values.sidecar.image "defaultTag" .Chart.AppVersion) }}
{{- end }}
{{- define "edgelake-node.nodeImage" -}}
{{- include "edgelake-node.image" (dict "image" .Values.node.image "defaultTag" "latest") }}
{{- end }}

{{/* Whether the git repository is reached over SSH (ssh://, git+ssh://, or scp-like user@host:path). */}}
{{- define "edgelake-node.sshRepo" -}}
{{- $repo := .Values.sidecar.git.repo }}
{{- if or (hasPrefix "ssh://" $repo) (hasPrefix "git+ssh://" $repo) (regexMatch "^[^/:]+@[^/:]+:" $repo) }}true{{ end }}
{{- end }}

{{/* Where known_hosts comes from: value, configMap, secret, or nothing. */}}
{{- define "edgelake-node.knownHostsSource" -}}
{{- $k := .Values.sidecar.git.knownHosts }}
{{- if $k.value }}value{{ else if $k.configMap.name }}configMap{{ else if $k.secret.name }}secret{{ end }}
{{- end }}

{{/*
The pod volume behind one of the four node volumes (scripts, data, blockchain, home), as YAML
{claim, subPath} for a claim the pod names, {} for a claim template or an emptyDir.
*/}}
{{- define "edgelake-node.volumeSource" -}}
{{- $p := .ctx.Values.persistence }}
{{- $vol := index $p .name }}
{{- if $vol.existingClaim }}
claim: {{ $vol.existingClaim | quote }}
{{- else if $p.existingClaim }}
claim: {{ $p.existingClaim | quote }}
subPath: {{ .name }}
{{- end }}
{{- end }}

{{/* A mount of one of the four node volumes: its subPath when it lives in the shared existing claim. */}}
{{- define "edgelake-node.volumeMount" -}}
{{- $src := include "edgelake-node.volumeSource" . | fromYaml }}
- name: {{ .name }}
  mountPath: {{ .mountPath }}
  {{- with $src.subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}

{{/* Cross-value checks the schema cannot say clearly; each fails with one plain sentence. */}}
{{- define "edgelake-node.validate" -}}
{{- if and (not .Values.sidecar.git.repo) (not .Values.sidecar.fallback.enabled) }}
{{- fail "sidecar.git.repo is empty and sidecar.fallback.enabled is false: the sidecar needs at least one scripts source" }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring.serviceMonitor.enabled and monitoring.podMonitor.enabled are both true: choose one, or Prometheus scrapes the sidecar twice" }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "monitoring.serviceMonitor.enabled needs metrics.service.enabled (the ServiceMonitor selects that Service); or use monitoring.podMonitor" }}
{{- end }}
{{- if and .Values.sidecar.kube.nodeExternalIP (not .Values.sidecar.kube.enabled) }}
{{- fail "sidecar.kube.nodeExternalIP needs sidecar.kube.enabled" }}
{{- end }}
{{- $git := .Values.sidecar.git }}
{{- $known := include "edgelake-node.knownHostsSource" . }}
{{- if and (include "edgelake-node.sshRepo" .) (not $known) (not $git.insecureIgnoreHostKeys) }}
{{- fail (printf "sidecar.git.repo %s is reached over SSH, but no host keys are given: set sidecar.git.knownHosts.value (e.g. the output of ssh-keyscan), .configMap.name or .secret.name; or, on a trusted network only, sidecar.git.insecureIgnoreHostKeys=true" $git.repo) }}
{{- end }}
{{- if gt (len (compact (list $git.knownHosts.value $git.knownHosts.configMap.name $git.knownHosts.secret.name))) 1 }}
{{- fail "sidecar.git.knownHosts: set one of value, configMap.name and secret.name" }}
{{- end }}
{{- if and $known $git.insecureIgnoreHostKeys }}
{{- fail "sidecar.git.insecureIgnoreHostKeys contradicts sidecar.git.knownHosts: host keys are given, so they are checked; unset one" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (eq (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set exactly one of minAvailable and maxUnavailable (the other null)" }}
{{- end }}
{{- if and .Values.sidecar.git.username (not .Values.sidecar.git.passwordSecret.name) }}
{{- fail "sidecar.git.username needs sidecar.git.passwordSecret.name (the password or token is read from that Secret)" }}
{{- end }}
{{- if and .Values.sidecar.native (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "sidecar.native needs Kubernetes >= 1.29 (native sidecar containers); this cluster is %s: set sidecar.native=false" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $owned := dict "NODE_TYPE" "node.type" "NODE_NAME" "node.name" "EDGELAKE_PATH" "node.home" "ANYLOG_SERVER_PORT" "node.ports.tcp" "ANYLOG_REST_PORT" "node.ports.rest" "ANYLOG_BROKER_PORT" "node.ports.broker" "LOCAL_SCRIPTS" "persistence.scripts.mountPath" }}
{{- range $key, $value := $owned }}
{{- if hasKey $.Values.node.env $key }}
{{- fail (printf "node.env.%s: the chart sets %s from %s; set that value instead" $key $key $value) }}
{{- end }}
{{- end }}
{{- $ports := include "edgelake-node.ports" . | fromYaml }}
{{- $used := list (int $ports.tcp) (int $ports.rest) }}
{{- if gt (int $ports.broker) 0 }}{{ $used = append $used (int $ports.broker) }}{{ end }}
{{- if has (int .Values.sidecar.httpPort) $used }}
{{- fail (printf "sidecar.httpPort %d is also a node port: the two containers share the pod's network" (int .Values.sidecar.httpPort)) }}
{{- end }}
{{- if ne (len $used) (len (uniq $used)) }}
{{- fail (printf "node.ports: the TCP, REST and broker ports must differ, got %v" $used) }}
{{- end }}
{{- end }}
