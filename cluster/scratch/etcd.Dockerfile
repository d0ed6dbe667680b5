# etcd, built offline FROM scratch by cluster/build-images.sh: the host's /usr/bin/etcd (Debian's
# etcd-server) with the shared libraries ldd lists. Runs as a non-root user; data under /etcd-data (the working directory; pass --data-dir /etcd-data).
FROM scratch
COPY rootfs/ /
COPY --chown=10002:10002 data/ /etcd-data/
ENV PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /etcd-data
USER 10002:10002
VOLUME ["/etcd-data"]
ENTRYPOINT ["/usr/bin/etcd"]
LABEL org.opencontainers.image.title="etcd (offline scratch build)"
