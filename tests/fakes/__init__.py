"""In-memory fakes of the ports: honest (the contract tests run them beside the real adapters)."""
