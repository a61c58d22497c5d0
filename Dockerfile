# pagecast: MQTT-driven live web page -> Google Cast.
#
#   docker build -t pagecast .
#   docker run --init --network host --cap-add SYS_ADMIN --shm-size 1g \
#     -v "$PWD/config.yaml:/config/config.yaml:ro" pagecast
#
# or configure with PAGECAST_* variables only (no file needed), e.g.
#   -e PAGECAST_MQTT__HOST=192.168.1.10 -e PAGECAST_CAST__DEVICE="Living Room TV"
# See docker-compose.yml for why host networking and SYS_ADMIN.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

# The one list of system packages (also read by scripts/setup.sh): Chromium, ffmpeg, Xvfb and
# the fonts dashboards need, emoji included. Same filter as setup.sh: skip comments and blanks.
COPY system-packages.txt /tmp/system-packages.txt
RUN apt-get update \
    && grep -Ev '^\s*(#|$)' /tmp/system-packages.txt \
        | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/system-packages.txt

# Xvfb refuses to create its socket directory unless it runs as root; create it here once so
# the unprivileged agent can start its own display.
RUN mkdir -p /tmp/.X11-unix && chmod 1777 /tmp/.X11-unix

# Never `playwright install`: the Python package only drives Debian's /usr/bin/chromium.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN pip install . && rm -rf /src

# A non-root user keeps Chromium's sandbox on (as root it would need --no-sandbox).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin pagecast \
    && mkdir -p /config && chown pagecast:pagecast /config
USER pagecast

# config.yaml is read from the working directory when present: mount it at
# /config/config.yaml, or leave it out and configure with PAGECAST_* variables only.
WORKDIR /config
EXPOSE 8099

# /healthz is served by the agent's HTTP server; set PAGECAST_STREAM__HTTP_PORT if you move it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PAGECAST_STREAM__HTTP_PORT', '8099') + '/healthz', timeout=4)"]

ENTRYPOINT ["pagecast"]
CMD ["run"]
