# One CPU image for every service; compose.yaml picks the service with the command.
# Build: docker build -t synctalk:cpu .     GPU renderer: Dockerfile.gpu
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY constraints/ constraints/
COPY proto/ proto/
COPY synctalk/ synctalk/
COPY services/ services/
COPY training/ training/
COPY kernels/ kernels/
RUN pip install --no-cache-dir -c constraints/cpu.txt '.[cpu]'

# The avatar store is mounted read-only at /avatars by compose.yaml.
ENV SYNCTALK_MODELS__AVATARS_DIR=/avatars \
    SYNCTALK_SERVICES__HOST=0.0.0.0 \
    SYNCTALK_LOG_FORMAT=json
USER nobody
ENTRYPOINT ["synctalk", "serve"]
