"""Scripts run by an isolated venv's python (`core/isolated_env.py`), never imported by toolturn: each
speaks JSON through files and imports only the standard library and its benchmark's package."""
