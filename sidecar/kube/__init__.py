"""Optional Kubernetes integration: network identity, Events, pod annotations."""
