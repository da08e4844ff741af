"""Launch kits: what a cluster or a cloud service needs to run adclick (docs/launch.md)."""
