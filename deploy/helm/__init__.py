"""The Helm chart's tooling: the schemas it is validated against (schemagen, schema_convert)
and its rendering for the chart/code consistency test (chart). The chart is deploy/helm/paysaga."""
