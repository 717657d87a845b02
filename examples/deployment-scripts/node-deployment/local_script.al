# Users edit this file in the pod; the sidecar keeps the edits across restarts and syncs.
