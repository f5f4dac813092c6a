"""Ports: what the use cases need from the outside world, named for their role."""
