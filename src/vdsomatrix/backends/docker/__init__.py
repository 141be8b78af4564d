"""The docker backend: Debian userlands as locally built images, the probe in confined containers.

    engine.py     the Docker SDK client, image lookup, container removal, engine errors
    rootfs.py     base images: debootstrap a suite's root filesystem (verified) and import it
    images.py     probe images: the Dockerfile on a base, tags by content hash, rebuilds
    container.py  one confined probe container, read and removed, that stops by itself
    leftovers.py  what killed runs and old recipes left in the engine, and removing it
    backend.py    the Backend the runner sees
"""

from vdsomatrix.backends.docker.backend import DockerBackend

__all__ = ["DockerBackend"]
