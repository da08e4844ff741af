"""The Dataflow Flex Template: parameters (template.py, metadata.json), image (Dockerfile), launcher (main.py)."""
