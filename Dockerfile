# vild server image. The ONNX Runtime library comes from the pinned
# onnxruntime-node npm package, fetched and integrity-checked by the project's
# own script (scripts/setup.d/30-onnxruntime.sh).
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm ca-certificates openssl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV VILD_CACHE=/src/.cache
RUN bash scripts/setup.d/30-onnxruntime.sh
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o /out/vild ./cmd/vild

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/vild --create-home vild
COPY --from=build /out/vild /usr/local/bin/vild
COPY --from=build /src/.cache/onnxruntime/libonnxruntime.so /usr/local/lib/vild/libonnxruntime.so
# The API listens on every address, so it needs API keys (VILD_AUTH=keys):
# make the first with the same data volume (docs/deploy.md),
#   docker run --rm -v vild-data:/var/lib/vild vild keys create --name admin --scopes admin
#   docker run -v vild-data:/var/lib/vild -p 8080:8080 vild
# The metrics port (9090) has no keys: publish it to an internal network only.
ENV VILD_ADDR=0.0.0.0:8080 \
    VILD_AUTH=keys \
    VILD_METRICS_ADDR=0.0.0.0:9090 \
    VILD_ORT_LIB=/usr/local/lib/vild/libonnxruntime.so \
    VILD_DATA_DIR=/var/lib/vild
USER vild
VOLUME /var/lib/vild
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD wget -qO- http://127.0.0.1:8080/readyz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vild"]
CMD ["serve"]
