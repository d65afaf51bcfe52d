"""Volumes: local volumes and the parsing of mount specifications."""
