{{/* Names and labels shared by every object of the chart. */}}

{{- define "septum.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "septum.labels" -}}
app.kubernetes.io/part-of: septum
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: septum.selector (dict "root" $ "component" "agent"). */}}
{{- define "septum.selector" -}}
app.kubernetes.io/name: septum-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The DNS name the relay dials to find the agents (the peer Service), also in the agents'
certificate so that the relay can verify it. */}}
{{- define "septum.peerService" -}}
septum-peer.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{- define "septum.podEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/*
A list of FlowFilters as Hubble's exporter flags take them: JSON objects joined by commas.
*/}}
{{- define "septum.flowFilters" -}}
{{- $out := list -}}
{{- range . -}}
{{- $out = append $out (toJson .) -}}
{{- end -}}
{{- join "," $out -}}
{{- end }}
