"""The ecr-operator.io/v1alpha1 API: CRD models (spec + status) and CRD manifest generation."""
