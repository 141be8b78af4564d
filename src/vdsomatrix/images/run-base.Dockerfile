# The run base of one Debian suite: its base image (debootstrap + import, see
# src/vdsomatrix/backends/docker/rootfs.py) with every package that only building the helper
# needs purged by dpkg (build_only_packages.py: gcc, binutils, libc6-dev, musl-tools and what
# they pulled in), copied into one layer, so that it holds no compiler in its layers either.
# The probe image (images/Dockerfile) compiles on the base and copies the result onto this.
#
# Built once per base by src/vdsomatrix/backends/docker/images.py (classic builder, network
# "none", pull=False), from a context of this file and build_only_packages.py only: a change to
# the probe never rebuilds it. What was purged, with versions: /opt/vdsomatrix/build-only-packages.
ARG BASE
FROM ${BASE} AS purge

COPY build_only_packages.py /tmp/build_only_packages.py

# dpkg refuses to purge what a kept package depends on, so a wrong list fails here.
RUN set -eu; \
    drop=$(python3 /tmp/build_only_packages.py); \
    mkdir -p /opt/vdsomatrix; \
    dpkg-query -W -f='${Package} ${Version}\n' $drop > /opt/vdsomatrix/build-only-packages; \
    dpkg --purge $drop > /dev/null; \
    rm -f /tmp/build_only_packages.py; \
    for tool in cc gcc ld as; do \
        if command -v $tool > /dev/null; then echo "$tool is left after the purge" >&2; exit 1; fi; \
    done

FROM scratch
COPY --from=purge / /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
WORKDIR /
