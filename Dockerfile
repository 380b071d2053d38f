# tpfleet container images: one file, two targets (docs/images.md).
#   docker build --target operator -t tpfleet-operator .
#   docker build --target node     -t tpfleet-node .
# Every stage starts from NODE_IMAGE, the official Node LTS image. Where no registry is reachable,
# images/build.sh passes a local stand-in built by images/base.sh (--build-arg NODE_IMAGE=...).
# The images run compiled JavaScript: images/bundle.ts (esbuild) turns each entrypoint into one file
# in the build stage, so the runtime stages carry neither TypeScript, tsx nor node_modules; the
# sidecar's N-API addon sits next to the bundles.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# --- build: dependencies, the native addon and the bundles; thrown away, so its compilers never ship ---
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/tpfleet
COPY package.json package-lock.json ./
# Every dependency, the dev ones included: esbuild bundles the production ones into dist/ below, and
# node_modules stays in this stage. Behind a TLS-inspecting proxy, pass its CA as the optional secret
# npm-ca (`--secret id=npm-ca,src=ca.pem`); it is added to Node's roots for this step only.
RUN --mount=type=secret,id=npm-ca \
    if [ -f /run/secrets/npm-ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm-ca; fi \
 && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error \
 && rm -rf /root/.npm
# The addon against the headers of the Node it will run on (node-gyp bundled with npm; --nodedir
# keeps node-gyp from downloading headers). Only the .node file is kept.
COPY sidecar/native/ sidecar/native/
RUN cd sidecar/native \
 && node /usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js rebuild --nodedir=/usr/local --loglevel=warn \
 && mv build/Release/tpfleet_native.node /tmp/ && rm -rf build /root/.cache \
 && mkdir -p build/Release && mv /tmp/tpfleet_native.node build/Release/
# The sidecar's capability launcher (images/launcher/sidecar-exec.c, ADR 0005): 14 KB instead of
# a 127 MB copy of node carrying the file capability; it runs only the sidecar's bundle.
COPY images/launcher/ images/launcher/
RUN gcc -O2 -s -Wall -Wextra -Werror -o /opt/sidecar-exec images/launcher/sidecar-exec.c
# Sources last: a code change rebuilds only this layer and the targets' last layer. One bundle per
# entrypoint (tpfleet-operator.mjs, tpfleet-agent.mjs, tpfleet-sidecar.mjs), the addon beside them
# at the path sidecar/native/index.ts loads it from (relative to the module: build/Release/).
COPY . .
RUN node images/bundle.ts /opt/app/dist \
 && mkdir -p /opt/app/dist/build/Release && cp sidecar/native/build/Release/tpfleet_native.node /opt/app/dist/build/Release/

# --- runtime: what both targets share ---
FROM ${NODE_IMAGE} AS runtime
ARG VERSION=0.1.0
# 65532: the non-root uid/gid the DaemonSet's sidecar runs as (operator/render/daemonset.ts); a
# passwd entry so tools and os.userInfo() see a name and home. No setuid/setgid programs (su, mount,
# passwd...): the sidecar runs with allowPrivilegeEscalation true for its file capability, and
# nothing else in the image may raise a process's privileges (ADR 0005).
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot \
 && find / -xdev -type f -perm /6000 -exec chmod a-s {} +
LABEL org.opencontainers.image.source="https://github.com/tpfleet/tpfleet" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.vendor="tpfleet"

# --- operator: the controller Deployment ---
FROM runtime AS operator
LABEL org.opencontainers.image.title="tpfleet-operator" \
      org.opencontainers.image.description="tpfleet operator: reconciles TransparentProxy objects into node fleets"
COPY --from=build /opt/app/dist/tpfleet-operator.mjs /opt/tpfleet/dist/
COPY images/bin/tpfleet-operator /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["tpfleet-operator"]

# --- node: the DaemonSet's image (agent init + watch, sidecar, cleanup) ---
FROM runtime AS node
LABEL org.opencontainers.image.title="tpfleet-node" \
      org.opencontainers.image.description="tpfleet node agent (TPROXY rules, routes, tuning) and forwarding sidecar"
# What the agent runs: nft (nftables), iptables-{nft,legacy}-{save,restore} and ip6tables (iptables),
# ip (iproute2), flock (util-linux, essential in Debian; named so it stays: the state lock, daemonset/lock.ts).
# The sidecar's CAP_NET_RAW comes from the file capability cap_net_raw=p on
# sidecar-exec, a launcher only tpfleet-sidecar runs, which hands it to node as an ambient
# capability and runs nothing but the sidecar; `node` itself (the agent, anything else) gains nothing. setcap runs after the COPY
# because COPY may drop xattrs. setcap's package (libcap2-bin) stays: iproute2 depends on it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nftables iptables iproute2 libcap2-bin util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/sidecar-exec /usr/local/libexec/tpfleet/sidecar-exec
RUN chmod 0755 /usr/local/libexec/tpfleet/sidecar-exec \
 && setcap cap_net_raw=p /usr/local/libexec/tpfleet/sidecar-exec
COPY --from=build /opt/app/dist/tpfleet-agent.mjs /opt/app/dist/tpfleet-sidecar.mjs /opt/tpfleet/dist/
COPY --from=build /opt/app/dist/build/ /opt/tpfleet/dist/build/
COPY images/bin/tpfleet-agent images/bin/tpfleet-sidecar /usr/local/bin/
USER 65532:65532
CMD ["tpfleet-sidecar", "--config", "/etc/tpfleet/nodeconfig.yaml"]
