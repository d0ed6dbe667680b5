# The node image, built offline FROM scratch by cluster/build-images.sh from a root filesystem it
# assembles on this machine: the host's node binary and the shared libraries ldd lists, the built
# app (dist/, proto/, production node_modules) under /app, cluster/healthcheck.mjs, /usr/bin/env
# (for the bin's shebang), a non-root user (walrecovery, uid 10001) and an empty /data.
# Users with registry access build cluster/Dockerfile (FROM node:20) instead: same layout.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
ENV PATH=/usr/local/bin:/usr/bin:/bin NODE_ENV=production WAL_RECOVERY_LOG_LEVEL=info
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["/usr/local/bin/node", "/app/cluster/healthcheck.mjs"]
ENTRYPOINT ["/usr/local/bin/wal-recovery"]
CMD ["--help"]
LABEL org.opencontainers.image.title="wal-recovery node (offline scratch build)"
