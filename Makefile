# The two commands a fresh machine needs: `make serve` and `make test`.
# uv is kept on the installed Python: it must never try to download one.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: serve test lint typecheck bench install

install:
	@python3 -m uv --version >/dev/null 2>&1 || command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --quiet

serve: install
	$(UV) run tkcloud serve

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports

typecheck: install
	$(UV) run mypy

test: lint typecheck
	$(UV) run pytest

bench: install
	$(UV) run python -m bench.ingest
