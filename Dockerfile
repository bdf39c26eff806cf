# Multi-stage build: compile in the Rust image, run from a slim Debian.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lua ./lua
COPY ws-client ./ws-client
RUN cargo build --release --locked --bin flashdrop

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 flashdrop
COPY --from=build /src/target/release/flashdrop /usr/local/bin/flashdrop
USER flashdrop
ENV FLASHDROP_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["flashdrop"]
CMD ["serve"]
