# Prometheus, built offline FROM scratch by cluster/build-images.sh from Debian's prometheus
# package (/usr/bin/prometheus) when it is installed. Config at /etc/prometheus/prometheus.yml
# (compose mounts cluster/prometheus.yml and cluster/alerts.yml there); data in /prometheus.
FROM scratch
COPY rootfs/ /
COPY --chown=10003:10003 data/ /prometheus/
ENV PATH=/usr/bin:/bin
USER 10003:10003
VOLUME ["/prometheus"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
LABEL org.opencontainers.image.title="Prometheus (offline scratch build)"
