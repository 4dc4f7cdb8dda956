# One image for every app service (worker, beat, migrate, flower, metrics, api); the
# `simulator` target adds the gateway simulator for the local stack. docker-compose.yml
# picks the command.
#
# Production installs requirements.lock only: every package pinned and checked against
# its hash (pip --require-hashes), no simulator or plotting libraries. Regenerate the lock
# with `make lock` after changing dependencies in pyproject.toml (docs/security.md).
FROM python:3.11-slim AS production

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SMS_DATA_DIR=/var/lib/sms-pipeline

WORKDIR /app
COPY requirements.lock ./
RUN pip install --require-hashes --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY sms_pipeline ./sms_pipeline
# --no-deps: the dependencies are the locked ones above, nothing resolved again here.
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin sms \
    && mkdir -p "$SMS_DATA_DIR" \
    && chown sms "$SMS_DATA_DIR"

USER sms
# Every long-running command here answers HTTP except worker and beat, which override or
# disable this in docker-compose.yml. The simulator, metrics server and API answer on
# their own ports, so the compose file gives each its own check; this default only
# proves the package imports and the settings are valid.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-c", "from sms_pipeline.settings import load_settings; load_settings()"]

ENTRYPOINT ["sms-pipeline"]
CMD ["--help"]

# The IP2SMS gateway simulator: the local stack and demos only, never production. Its one
# library (aiohttp) is locked already: a base dependency, as the simulator ships in the package.
FROM production AS simulator
