"""Model deployments on a cluster: desired objects, rollout plans, the API calls."""
