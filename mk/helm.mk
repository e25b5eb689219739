# The Helm chart (deploy/helm/paysaga): pinned helm and kubeconform, and the check that
# renders the chart for its default values and each ci/*-values.yaml and validates every
# object, the custom resources included, against the schemas pinned in deploy/helm/schemas.
# No cluster and no network: the schemas are files in the repository.

HELM_VERSION := v3.22.0
KUBECONFORM_VERSION := v0.8.0
HELM := $(TOOLS_BIN)/helm
KUBECONFORM := $(TOOLS_BIN)/kubeconform

CHART := deploy/helm/paysaga
CHART_SCHEMAS := deploy/helm/schemas
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion): its schemas are pinned.
CHART_KUBE_VERSION := 1.30.0
CHART_CI_VALUES := $(sort $(wildcard $(CHART)/ci/*-values.yaml))
KUBECONFORM_FLAGS := -strict -summary \
  -schema-location '$(CHART_SCHEMAS)/kubernetes-v$(CHART_KUBE_VERSION)/{{ .ResourceKind }}{{ .KindSuffix }}.json' \
  -schema-location '$(CHART_SCHEMAS)/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'

.PHONY: helm-tools
helm-tools: | check-go ## install pinned helm and kubeconform into .tools/bin
	@mkdir -p $(TOOLS_BIN)
	$(call go-install-pinned,helm,helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))
	$(call go-install-pinned,kubeconform,github.com/yannh/kubeconform/cmd/kubeconform,$(KUBECONFORM_VERSION))

# `make tools` installs these too.
tools: helm-tools

# helm warns on stderr that files/dashboards/paysaga.json is a link (to the dashboard in
# deploy/observability): that is meant, so only that line is dropped.
.PHONY: helm-check
helm-check: helm-tools ## helm lint + template (default and ci/*-values.yaml), every object validated (kubeconform)
	@for values in "" $(CHART_CI_VALUES); do \
	  echo "==> helm lint, helm template $(CHART) $${values:+-f $$values} | kubeconform"; \
	  $(HELM) lint --strict --quiet --kube-version $(CHART_KUBE_VERSION) $(CHART) $${values:+-f $$values} \
	    2> >(grep -v 'found symbolic link in path' >&2) || exit 1; \
	  $(HELM) template paysaga $(CHART) --namespace paysaga --kube-version $(CHART_KUBE_VERSION) \
	    $${values:+-f $$values} 2> >(grep -v 'found symbolic link in path' >&2) \
	    | $(KUBECONFORM) $(KUBECONFORM_FLAGS) - || exit 1; \
	done

.PHONY: helm-schemas
helm-schemas: venv ## refresh the pinned schemas in deploy/helm/schemas (network; on purpose only)
	@echo "==> REFRESHING $(CHART_SCHEMAS) from the registries (deploy/helm/schemagen.py)"
	$(PY) -m deploy.helm.schemagen
