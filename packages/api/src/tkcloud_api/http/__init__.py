"""HTTP controllers. They map requests to use-case calls and results to response bodies; they
never import adapters (import-linter checks)."""
