# syntax=docker/dockerfile:1
# One image for every component: `aibridge proxy|recorder|api|up` (the default command is the
# embedded all-in-one bridge). Build: docker build -t aibridge .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aibridge
WORKDIR /src
# The dependencies change less often than the code: install them in their own layer.
COPY pyproject.toml README.md ./
RUN /opt/aibridge/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /opt/aibridge/bin/pip install -r /tmp/requirements.txt
# aibridge/{proxy,recorder,api} link to services/ and aibridge/schemas to schemas/: copy all three.
COPY aibridge ./aibridge
COPY services ./services
COPY schemas ./schemas
RUN /opt/aibridge/bin/pip install --no-deps . \
    && /opt/aibridge/bin/aibridge --version

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/aibridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AIBRIDGE_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
RUN groupadd --system --gid 10001 aibridge \
    && useradd --system --uid 10001 --gid aibridge --home-dir /var/lib/aibridge --shell /usr/sbin/nologin aibridge \
    && mkdir -p /var/lib/aibridge/keys /var/lib/aibridge/signing /var/lib/aibridge/spool \
    && chown -R aibridge:aibridge /var/lib/aibridge
COPY --from=build /opt/aibridge /opt/aibridge
USER 10001:10001
WORKDIR /var/lib/aibridge
EXPOSE 8080 8081 8082
# Each component serves /healthz; set AIBRIDGE_HEALTHCHECK_URL for the api (8081) and recorder (8082).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['AIBRIDGE_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["aibridge"]
CMD ["up", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/aibridge"]
