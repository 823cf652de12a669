# Stand-in for the official python:3.11-slim-bookworm image, built by mlflow_stack/standins.py
# when it cannot be pulled: Debian's Python 3.11 with the official image's commands and ENV.
ARG BASE
FROM ${BASE}

ENV LANG=C.UTF-8

# Extra CAs (e.g. a TLS-intercepting proxy's) that later pip installs must trust; may be empty.
COPY extra-ca/ /usr/local/share/ca-certificates/

# The official image's pip installs system-wide: Debian's EXTERNALLY-MANAGED marker goes.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3.11 python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && update-ca-certificates \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip \
    && python --version && pip --version && command -v useradd

CMD ["python3"]
