"""The Docker engine, reached through the Docker SDK: the client, image lookup, container removal.

Everything that talks to the engine goes through these few functions, so that an engine that
is missing, stopped or misbehaving always becomes the same one-line message saying what to do.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from vdsomatrix.errors import EnvironmentUnavailable, VdsomatrixError
from vdsomatrix.text import one_line

Log = Callable[[str], Any]

LABEL = "org.vdsomatrix"  # label namespace: org.vdsomatrix.kind, .suite, .hash, ...
NO_ENGINE = (
    "no Docker engine reachable ({detail}): start one with `bash .ci/setup-machine` "
    "(as root) or `dockerd &`, or set DOCKER_HOST"
)
NOT_BUILT = "image not built: run `vdsomatrix images` (in a checkout: `nox -s images`)"
LONG_TIMEOUT = 600  # seconds per request for builds, imports and exports


def docker_client(timeout: float = 5.0, *, ping: bool = True):
    """A Docker SDK client from the environment (DOCKER_HOST, ...), checked with a ping.

    ``timeout`` is the SDK's per-request timeout; raises EnvironmentUnavailable with what to do.
    """
    import docker  # imported here: the host backend and the report do not need the SDK

    try:
        client = docker.from_env(timeout=timeout)
        if ping:
            client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, ReadTimeout, ...
        raise EnvironmentUnavailable(NO_ENGINE.format(detail=one_line(exc))) from None
    return client


def find_image(client, tag: str):
    """The image named ``tag``, or None."""
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


@contextlib.contextmanager
def engine(client, timeout: float = LONG_TIMEOUT) -> Iterator[Any]:
    """The given client, or a new one (by default with a long timeout, for builds) closed
    afterwards."""
    if client is not None:
        yield client
        return
    own = docker_client(timeout=timeout)
    try:
        yield own
    finally:
        own.close()


def close(client) -> None:
    """Close a client (its connection pool); a client that cannot be closed is left as it is."""
    close_method = getattr(client, "close", None)
    if close_method is not None:
        quiet(close_method)


def quiet(call: Callable[[], Any]) -> None:
    """Run ``call``, ignoring any error: for clean-up that must not hide the real failure."""
    try:
        call()
    except Exception:
        pass


def remove_container(client, ref: str | None, log: Log = print) -> None:
    """Force-remove a container by id or name; a missing container is fine."""
    import docker.errors

    if not ref:
        return
    for attempt in range(3):
        try:
            client.api.remove_container(ref, force=True, v=True)
            return
        except docker.errors.NotFound:
            return
        except Exception as exc:  # "removal already in progress", a busy engine, ...
            if attempt == 2:
                log(f"warning: could not remove container {ref}: {one_line(exc)}")
                return
            time.sleep(0.5)


def is_engine_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine failing (refused, gone, out of space) rather than a bug."""
    import docker.errors
    import requests

    return isinstance(
        exc, (docker.errors.DockerException, requests.exceptions.RequestException,
              VdsomatrixError, ConnectionError)
    )


def engine_error_message(exc: BaseException) -> str:
    """One line for an engine failure: the engine's own explanation when it gave one."""
    import docker.errors
    import requests

    detail = one_line(getattr(exc, "explanation", None) or exc, 300)
    answered = isinstance(exc, docker.errors.APIError)  # an HTTP error is an answer too
    if not answered and isinstance(exc, requests.exceptions.RequestException | ConnectionError):
        # No answer at all (the socket closed, or refused): the engine itself went away.
        return (f"Docker engine error: the engine stopped answering ({detail}); "
                "check it with `docker info`")
    return f"Docker engine error: {detail}"
