# broadcaster: one container, test pattern (or a file) live over WHEP.
#   docker build -t broadcaster .
#   docker run --rm --network host broadcaster          # simplest: no NAT in between
# or, with published ports, tell viewers the host's address (ICE host candidates):
#   docker run --rm -p 8080:8080 -p 40000-40099:40000-40099/udp \
#       -v $PWD/my.toml:/app/docker.toml broadcaster      # my.toml sets ice.announce
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md config.toml ./
COPY broadcaster ./broadcaster
COPY viewer ./viewer
RUN pip install --no-cache-dir -e .

# Media goes over UDP in this range; publish the same range with `docker run -p`.
COPY <<'TOML' /app/docker.toml
[server]
host = "0.0.0.0"
port = 8080

[ice]
port_min = 40000
port_max = 40099
TOML

EXPOSE 8080/tcp
EXPOSE 40000-40099/udp
CMD ["broadcaster", "serve", "--config", "/app/docker.toml", "--quiet"]
