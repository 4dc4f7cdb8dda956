"""The domains: plain functions over the database, the gateway and the dispatch port.

Each domain is a module or a package with a small public face; none imports an interface
(cli, api, tasks, demo) or Celery (`pyproject.toml`, `[tool.importlinter]`).
"""
