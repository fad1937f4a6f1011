# kubeline-server: the API/dispatcher/scheduler/operator process. Multi-stage, non-root, pinned.
#   docker build -f deploy/docker/server.Dockerfile -t kubeline-server:0.1.0 .
# The local test cluster builds the same image without Docker: scripts/cluster/build-deploy-images.
FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/kubeline \
 && /opt/kubeline/bin/pip install "uv==0.13.9" \
 && /opt/kubeline/bin/uv pip install --python /opt/kubeline/bin/python ".[postgres]" "kopf==1.45.2" "kubernetes==37.0.2"

FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16
RUN groupadd -g 1000 kubeline && useradd -u 1000 -g 1000 -m -d /home/kubeline kubeline \
 && mkdir -p /var/lib/kubeline && chown 1000:1000 /var/lib/kubeline
COPY --from=build /opt/kubeline /opt/kubeline
ENV PATH=/opt/kubeline/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 KUBELINE_HOME=/var/lib/kubeline
USER 1000:1000
WORKDIR /home/kubeline
EXPOSE 8080
ENTRYPOINT ["kubeline"]
CMD ["operator", "--dispatch", "--host", "0.0.0.0", "--port", "8080"]
