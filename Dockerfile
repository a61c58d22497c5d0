# pagecast: MQTT-driven live web page -> Google Cast.
#
#   docker build -t pagecast .
#   docker run --init --network host --cap-add SYS_ADMIN \
#     -v "$PWD/config.yaml:/config/config.yaml:ro" pagecast
#
# or configure with PAGECAST_* variables only (no file needed), e.g.
#   -e PAGECAST_MQTT__HOST=192.168.1.10 -e PAGECAST_CAST__DEVICE="Living Room TV"
# See docker-compose.yml for why host networking and SYS_ADMIN (or docker/seccomp-chromium.json).
#
# The base is Debian's own bookworm with Debian's Python 3.11 in a virtualenv. Where Docker Hub
# cannot be reached, scripts/docker-base.sh makes an equivalent debian:bookworm-slim with
# debootstrap; BASE may name any bookworm image (the Home Assistant add-on builds on its own).
ARG BASE=debian:bookworm-slim

# Build stage: pagecast and its Python dependencies in a virtualenv, which the image copies
# without pip, setuptools or apt's lists.
FROM ${BASE} AS venv
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN python3 -m venv /opt/pagecast \
    && /opt/pagecast/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/pagecast/bin/pip uninstall -y --disable-pip-version-check pip setuptools

FROM ${BASE}
# A build argument, not ENV: it is for apt during the build, not for the running agent.
ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/pagecast/bin:$PATH

# The one list of system packages (also read by scripts/setup.sh): Python, Chromium, ffmpeg,
# Xvfb, libatomic for Playwright's Node.js driver and the fonts dashboards need, emoji included.
# Same filter as setup.sh: skip comments and blanks.
COPY system-packages.txt /tmp/system-packages.txt
RUN apt-get update \
    && grep -Ev '^\s*(#|$)' /tmp/system-packages.txt \
        | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
        /tmp/system-packages.txt

# Xvfb refuses to create its socket directory unless it runs as root; create it here once so
# the unprivileged agent can start its own display.
RUN mkdir -p /tmp/.X11-unix && chmod 1777 /tmp/.X11-unix

# Never `playwright install`: the Python package only drives Debian's /usr/bin/chromium.
COPY --from=venv /opt/pagecast /opt/pagecast

# A non-root user keeps Chromium's sandbox on (as root it would need --no-sandbox).
# /state keeps the accepted start (the "wish") across restarts: mount a volume there (compose
# does) so it also survives a new container.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin pagecast \
    && mkdir -p /config /state && chown pagecast:pagecast /config /state
ENV PAGECAST_STATE_DIR=/state
USER pagecast

# Start Playwright's driver (its own Node.js) once, as the agent will: a shared library missing
# from the image (libatomic.so.1 was) fails the build here instead of every start of the agent.
RUN python -c "from playwright.sync_api import sync_playwright; sync_playwright().start().stop()" \
    && chromium --version && ffmpeg -hide_banner -version >/dev/null

# config.yaml is read from the working directory when present: mount it at
# /config/config.yaml, or leave it out and configure with PAGECAST_* variables only.
WORKDIR /config
EXPOSE 8099

# /healthz is served by the agent's HTTP server; set PAGECAST_STREAM__HTTP_PORT if you move it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PAGECAST_STREAM__HTTP_PORT', '8099') + '/healthz', timeout=4)"]

ENTRYPOINT ["pagecast"]
CMD ["run"]
