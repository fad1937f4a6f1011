# kubeline-worker: the image of attempt pods (python3, uv, kubeline for built-in components).
# Multi-stage, non-root (uid 1000), pinned. The local cluster's equivalent: scripts/local-cluster load-image.
FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/kubeline \
 && /opt/kubeline/bin/pip install "uv==0.13.9" \
 && /opt/kubeline/bin/uv pip install --python /opt/kubeline/bin/python ".[notebook]"

FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16
RUN groupadd -g 1000 kubeline && useradd -u 1000 -g 1000 -m -d /home/kubeline kubeline
COPY --from=build /opt/kubeline /opt/kubeline
RUN ln -s /opt/kubeline/bin/uv /usr/local/bin/uv
ENV PATH=/opt/kubeline/bin:$PATH PYTHONUNBUFFERED=1 UV_CACHE_DIR=/tmp/uv-cache HOME=/home/kubeline
USER 1000:1000
WORKDIR /home/kubeline
CMD ["python3"]
