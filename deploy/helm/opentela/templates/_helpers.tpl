{{/* Names. "opentela" for a release named opentela (or containing it), else RELEASE-opentela. */}}
{{- define "opentela.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The StatefulSet (and client Service): its Pods are <head>-0, <head>-1, ... */}}
{{- define "opentela.head" -}}
{{- printf "%s-head" (include "opentela.fullname" .) -}}
{{- end -}}

{{/* The headless Service giving each head its DNS name. */}}
{{- define "opentela.headless" -}}
{{- printf "%s-head-pods" (include "opentela.fullname" .) -}}
{{- end -}}

{{/* Head N's identity Secret is <prefix>-N. */}}
{{- define "opentela.identityPrefix" -}}
{{- .Values.identity.secretPrefix | default (printf "%s-identity" (include "opentela.fullname" .)) -}}
{{- end -}}

{{- define "opentela.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: head
{{- end -}}

{{- define "opentela.labels" -}}
{{ include "opentela.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The node's config file: the chart's settings, then .Values.config over them. */}}
{{- define "opentela.config" -}}
{{- $cfg := dict "home" "/var/lib/opentela" "role" "head" "http_host" "0.0.0.0" "http_port" (int .Values.http.port) "p2p_host" "0.0.0.0" "p2p_port" (int .Values.p2p.port) "drain_timeout" .Values.drainTimeout -}}
{{- with .Values.closedPool.authority }}
{{- $_ := set $cfg "authority" . -}}
{{- $_ := set $cfg "authority_key" "/var/lib/opentela/authority.key" -}}
{{- end }}
{{- with .Values.closedPool.grantTtl }}
{{- $_ := set $cfg "grant_ttl" . -}}
{{- end }}
{{- if .Values.swarmKeySecret }}
{{- $_ := set $cfg "swarm_key" "/var/lib/opentela/swarm.key" -}}
{{- end }}
{{- toYaml (mustMergeOverwrite $cfg (deepCopy .Values.config)) -}}
{{- end -}}
