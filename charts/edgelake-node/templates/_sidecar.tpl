{{/*
The sidecar container, in its three roles: the native sidecar (an init container with
restartPolicy: Always), the regular container beside the node, and the `seed` init step that
publishes the scripts once when native sidecars are off. Called with (dict "ctx" $ "mode" MODE),
MODE one of native, container, seed.
*/}}
{{- define "edgelake-node.sidecarContainer" -}}
{{- $ := .ctx }}
{{- $v := $.Values.sidecar -}}
- name: {{ ternary "seed-scripts" "sidecar" (eq .mode "seed") }}
  image: {{ include "edgelake-node.sidecarImage" $ }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    - {{ ternary "seed" "run" (eq .mode "seed") }}
    {{- range $v.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- if eq .mode "native" }}
  # Native sidecar: starts before the node, keeps running beside it, stops after it.
  restartPolicy: Always
  {{- end }}
  envFrom:
    # The node's own ConfigMap: NODE_TYPE and the ports enable and aim the node checks.
    - configMapRef:
        name: {{ include "edgelake-node.fullname" $ }}-env
    {{- range $.Values.node.extraEnvFromConfigMaps }}
    - configMapRef:
        name: {{ . }}
    {{- end }}
    {{- with $v.extraEnvFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    # SIDECAR_* names win over the node's LOCAL_SCRIPTS and ports in the shared ConfigMap.
    - name: SIDECAR_LINK
      value: {{ include "edgelake-node.scriptsLink" $ | quote }}
    - name: SIDECAR_ROOT
      value: {{ include "edgelake-node.sidecarRoot" $ | quote }}
    # The link as the node container sees it (its LOCAL_SCRIPTS): `{path}` in REST hooks is a file the
    # node can open.
    - name: SIDECAR_NODE_SCRIPTS_PATH
      value: {{ include "edgelake-node.scriptsLink" $ | quote }}
    {{- if $v.fallback.enabled }}
    - name: SIDECAR_FALLBACK_DIR
      value: {{ include "edgelake-node.fallbackDir" $ | quote }}
    {{- end }}
    {{- if $v.git.repo }}
    - name: SIDECAR_REPO
      value: {{ $v.git.repo | quote }}
    {{- end }}
    {{- if $v.git.ref }}
    - name: SIDECAR_REF
      value: {{ $v.git.ref | quote }}
    {{- end }}
    - name: SIDECAR_PERIOD
      value: {{ $v.git.period | quote }}
    - name: SIDECAR_LOCAL_EDITS
      value: {{ $v.git.localEdits | quote }}
    - name: SIDECAR_HTTP_PORT
      value: {{ $v.httpPort | quote }}
    - name: SIDECAR_LOG_LEVEL
      value: {{ $v.logLevel | quote }}
    - name: SIDECAR_LOG_FORMAT
      value: json
    {{- if $v.git.username }}
    - name: SIDECAR_GIT_USERNAME
      value: {{ $v.git.username | quote }}
    {{- end }}
    {{- if $v.git.passwordSecret.name }}
    - name: SIDECAR_GIT_PASSWORD_FILE
      value: {{ include "edgelake-node.gitSecretDir" $ }}/password/password
    {{- end }}
    {{- if $v.git.sshSecret.name }}
    - name: SIDECAR_SSH_KEY_FILE
      value: {{ include "edgelake-node.gitSecretDir" $ }}/ssh/ssh-privatekey
    {{- end }}
    {{- if include "edgelake-node.knownHostsSource" $ }}
    - name: SIDECAR_SSH_KNOWN_HOSTS_FILE
      value: {{ include "edgelake-node.gitSecretDir" $ }}/known-hosts/known_hosts
    {{- end }}
    {{- if $v.syncAuth.tokenSecret.name }}
    - name: SIDECAR_SYNC_TOKEN_FILE
      value: {{ include "edgelake-node.syncSecretDir" $ }}/token/token
    {{- end }}
    {{- if $v.syncAuth.hmacSecret.name }}
    - name: SIDECAR_SYNC_HMAC_SECRET_FILE
      value: {{ include "edgelake-node.syncSecretDir" $ }}/hmac/secret
    {{- end }}
    - name: SIDECAR_KUBE
      value: {{ ternary "on" "off" $v.kube.enabled | quote }}
    {{- if $v.kube.enabled }}
    - name: SIDECAR_KUBE_EVENTS
      value: {{ $v.kube.events | quote }}
    - name: SIDECAR_KUBE_ANNOTATIONS
      value: {{ $v.kube.annotations | quote }}
    {{- if $v.kube.networkIdentity }}
    - name: SIDECAR_SERVICE_NAME
      value: {{ include "edgelake-node.fullname" $ }}
    - name: SIDECAR_NETWORK_ENV_FILE
      value: {{ include "edgelake-node.networkEnvFile" $ }}
    {{- end }}
    - name: SIDECAR_NODE_EXTERNAL_IP
      value: {{ $v.kube.nodeExternalIP | quote }}
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if ne .mode "seed" }}
  ports:
    - name: http
      containerPort: {{ $v.httpPort }}
      protocol: TCP
  # The node starts only once this passes (native mode): scripts published, network env written.
  startupProbe:
    httpGet:
      path: /startupz
      port: {{ $v.httpPort }}
    {{- toYaml $v.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /livez
      port: {{ $v.httpPort }}
    {{- toYaml $v.probes.liveness | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "edgelake-node.volumeMount" (dict "ctx" $ "name" "scripts" "mountPath" $.Values.persistence.scripts.mountPath) | nindent 4 }}
    - name: tmp
      mountPath: /tmp
    {{- if $v.fallback.enabled }}
    - name: fallback
      mountPath: {{ include "edgelake-node.fallbackDir" $ }}
      readOnly: true
    {{- end }}
    {{- if and $v.kube.enabled $v.kube.networkIdentity }}
    - name: network
      mountPath: {{ include "edgelake-node.networkDir" $ }}
    {{- end }}
    {{- if $v.git.passwordSecret.name }}
    # Secrets are mounted as folders, not subPath files, so a rotated Secret reaches the sidecar,
    # which re-reads credential files at every sync.
    - name: git-password
      mountPath: {{ include "edgelake-node.gitSecretDir" $ }}/password
      readOnly: true
    {{- end }}
    {{- if $v.git.sshSecret.name }}
    - name: git-ssh
      mountPath: {{ include "edgelake-node.gitSecretDir" $ }}/ssh
      readOnly: true
    {{- end }}
    {{- if include "edgelake-node.knownHostsSource" $ }}
    - name: git-known-hosts
      mountPath: {{ include "edgelake-node.gitSecretDir" $ }}/known-hosts
      readOnly: true
    {{- end }}
    {{- if $v.kube.enabled }}
    # The service-account token, in this container only (the pod does not automount it).
    - name: kube-api-access
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- end }}
    {{- if $v.syncAuth.tokenSecret.name }}
    - name: sync-token
      mountPath: {{ include "edgelake-node.syncSecretDir" $ }}/token
      readOnly: true
    {{- end }}
    {{- if $v.syncAuth.hmacSecret.name }}
    - name: sync-hmac
      mountPath: {{ include "edgelake-node.syncSecretDir" $ }}/hmac
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
