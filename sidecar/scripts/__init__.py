"""The node's deployment scripts: seed, atomic publication, sync and local edits."""
