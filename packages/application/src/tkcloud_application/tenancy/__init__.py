"""Tenancy use cases: orgs, apps and their credentials."""
