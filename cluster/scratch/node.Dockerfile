# The node image, built offline FROM scratch by cluster/build-images.sh from a root filesystem it
# assembles on this machine: the host's node binary and the shared libraries ldd lists, the built
# app (dist/, proto/, production node_modules) under /app, cluster/healthcheck.mjs, /usr/bin/env
# (for the bin's shebang), /usr/bin/openssl (for `wal-recovery certs`), a non-root user
# (walrecovery, uid 10001), an empty /data and an empty /certs (docker-compose's certs volume
# takes its owner from it, so the certs step can write there).
# Users with registry access build cluster/Dockerfile (FROM node:20) instead: same layout.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
COPY --chown=10001:10001 data/ /certs/
ENV PATH=/usr/local/bin:/usr/bin:/bin NODE_ENV=production WAL_RECOVERY_LOG_LEVEL=info
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["/usr/local/bin/node", "/app/cluster/healthcheck.mjs"]
ENTRYPOINT ["/usr/local/bin/wal-recovery"]
CMD ["--help"]
LABEL org.opencontainers.image.title="wal-recovery node (offline scratch build)"
