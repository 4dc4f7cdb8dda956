"""Several gateways (docs/gateways.md): `registry` (the gateways as data and whose login
goes where), `routing` (which gateway a message goes to, failover within an attempt),
`flights` (its requests in flight), `health` (out of rotation and back), `latency` (out on
slow deliveries), `fallback` (a late code once more elsewhere), `stats` (requests per
gateway and minute) and `clients` (the process's client per gateway and login). The package
re-exports `registry`.
"""

from .registry import (
    CACHE_SECONDS,
    DEFAULT,
    SETTINGS_PASSWORD,
    GatewayTable,
    Login,
    Route,
    candidates,
    credential_problem,
    credential_problems,
    default_route,
    forget,
    login_for,
    read_table,
    resolve_password,
    routes,
    status_url_of,
)

__all__ = [
    "CACHE_SECONDS",
    "DEFAULT",
    "SETTINGS_PASSWORD",
    "GatewayTable",
    "Login",
    "Route",
    "candidates",
    "credential_problem",
    "credential_problems",
    "default_route",
    "forget",
    "login_for",
    "read_table",
    "resolve_password",
    "routes",
    "status_url_of",
]
