"""Ingestion: the signed-batch endpoint's use case (PROTOCOL.md)."""
