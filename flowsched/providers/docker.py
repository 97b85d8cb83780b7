"""DockerOperator: one task run as a container through the Docker Engine API.

The operator talks to the engine's HTTP API (the ``docker`` SDK) rather than
running the ``docker`` CLI, so the worker needs no Docker client binary and
errors arrive as structured responses it can turn into readable messages.
The endpoint is chosen at execute time, never at import, so DAG files using
it parse on hosts without any Docker engine.

Every container is labelled with its DAG, task, run and try. Those labels let
a stopped try (timeout, SIGTERM, mark/clear) remove its container even if it
was interrupted between "create" and "start", and let a new try remove what a
previous, hard-killed try of the same task left behind.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import signal
import stat
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flowsched.exceptions import DagDefinitionError, FlowschedError
from flowsched.operators.base import BaseOperator

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKER_HOST_ENV = "FLOWSCHED_DOCKER_HOST"
PULL_POLICIES = ("missing", "always", "never")
API_TIMEOUT = 60  # seconds per API call; streaming the logs has no timeout
LABEL = "flowsched."


class DockerTaskError(FlowschedError):
    """The container could not be run, or it failed; the message names what to fix."""


def resolve_docker_host(docker_conn: str | None = None) -> str:
    """The endpoint for a task: its ``docker_conn``, else ``$FLOWSCHED_DOCKER_HOST``, else
    the local socket.

    The task's own setting wins because a DAG author who names an endpoint means
    that one; the environment variable is the worker-wide default for the rest.
    """
    url = docker_conn or os.environ.get(DOCKER_HOST_ENV) or DEFAULT_DOCKER_HOST
    check_docker_url(url)
    return url


def check_docker_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "unix" and parts.path:
        return
    if parts.scheme == "tcp" and parts.hostname and parts.port:
        return
    raise DockerTaskError(
        f"bad Docker endpoint {url!r}: use unix:///path/to/docker.sock or tcp://host:port"
    )


def parse_mount(spec: str | dict[str, Any]) -> dict[str, Any]:
    """``"src:dst[:ro]"`` as the API's mount object; ``docker.types.Mount`` (a dict) as is.

    A source starting with ``/`` is a bind mount of a host path, anything else a
    named volume, as with ``docker run -v``.
    """
    if isinstance(spec, dict):
        return spec
    if not isinstance(spec, str):
        raise DagDefinitionError(f"mount {spec!r}: expected 'src:dst[:ro]' or docker.types.Mount")
    parts = spec.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        source, target, mode = parts
    elif len(parts) == 2:
        (source, target), mode = parts, "rw"
    else:
        raise DagDefinitionError(
            f"mount {spec!r}: expected 'src:dst', 'src:dst:ro' or 'src:dst:rw'"
        )
    if not source or not target.startswith("/"):
        raise DagDefinitionError(f"mount {spec!r}: the target must be an absolute path")
    return {
        "Source": source,
        "Target": target,
        "Type": "bind" if source.startswith("/") else "volume",
        "ReadOnly": mode == "ro",
    }


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first system-level ``kind`` among an exception's causes and arguments.

    requests and urllib3 nest the socket's error several levels deep, and their
    own exceptions are OSErrors too: only the builtin one says what happened.
    """
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind) and type(current).__module__ in ("builtins", "socket"):
            return current
        stack.extend([current.__cause__, current.__context__, *current.args])
        stack.append(getattr(current, "reason", None))
    return None


def _name(lookup: Any, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def permission_message(socket_path: str) -> str:
    """What to do when this process may not open the engine's socket.

    The fix is group membership, not root: the deployment's
    ``flowsched_worker_docker_access: true`` adds the ``flowsched`` user to ``docker``.
    """
    user = _name(pwd.getpwuid, os.geteuid())
    try:
        info = os.stat(socket_path)
        owner = f"owner {_name(pwd.getpwuid, info.st_uid)}:{_name(grp.getgrgid, info.st_gid)}"
        where = f"{owner}, mode {stat.S_IMODE(info.st_mode):04o}"
    except OSError as exc:
        where = f"cannot stat it: {exc.strerror}"
    return (
        f"permission denied on the Docker socket {socket_path} ({where}) for user '{user}': "
        f"add '{user}' to the socket's group, normally 'docker' (usermod -aG docker {user}; "
        "in the deployment flowsched_worker_docker_access: true adds the 'flowsched' user "
        "to 'docker'), then restart the worker"
    )


def connection_message(url: str, exc: BaseException) -> str:
    if url.startswith("unix://") and _find_cause(exc, PermissionError) is not None:
        return permission_message(urlsplit(url).path)
    reason = _find_cause(exc, OSError)
    detail = f"{type(reason).__name__}: {reason}" if reason else str(exc)
    return f"cannot reach the Docker endpoint {url} ({detail})"


@contextlib.contextmanager
def _api_errors(url: str, image: str) -> Iterator[None]:
    """Turn the SDK's errors into one-line messages naming the endpoint and image."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.APIError as exc:
        explanation = exc.explanation or str(exc)
        raise DockerTaskError(
            f"the Docker endpoint {url} refused a request for image {image}: {explanation}"
        ) from exc
    except requests.exceptions.Timeout as exc:
        raise DockerTaskError(
            f"the Docker endpoint {url} did not answer within {API_TIMEOUT}s ({exc})"
        ) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerTaskError(connection_message(url, exc)) from exc


def connect(url: str, *, stream: bool = False, version: str | None = None) -> DockerClient:
    """A client for ``url``, whose calls time out after ``API_TIMEOUT`` s unless for ``stream``.

    Without ``version`` it asks the engine for its API version, so an endpoint
    that cannot be reached fails here.
    """
    import docker

    timeout = None if stream else API_TIMEOUT
    return docker.DockerClient(base_url=url, timeout=timeout, version=version)


class DockerOperator(BaseOperator):
    """Runs ``command`` in a new container of ``image``; its exit code decides the task.

    The container's stdout and stderr go to the task log line by line; the last
    line is the task's XCom value. When the try is stopped (execution_timeout,
    SIGTERM, marked or cleared) the container gets ``stop_timeout`` seconds to
    exit after SIGTERM, then is killed and removed. ``auto_remove=False`` keeps
    containers that exited on their own, for inspection.
    """

    template_fields = ("image", "command", "environment")

    def __init__(
        self,
        task_id: str,
        image: str,
        command: str | Sequence[str] | None = None,
        environment: dict[str, str] | None = None,
        mounts: Sequence[str | dict[str, Any]] | None = None,
        network_mode: str | None = None,
        auto_remove: bool = True,
        cpus: float | None = None,
        mem_limit: str | int | None = None,
        pull_policy: str = "missing",
        docker_conn: str | None = None,
        docker_conn_id: str | None = None,
        stop_timeout: int = 10,
        **kwargs: Any,
    ) -> None:
        # Checked before the base class adds the task to its DAG: a bad task is never added.
        if not image or not isinstance(image, str):
            raise DagDefinitionError(f"task '{task_id}': image must be a non-empty string")
        if pull_policy not in PULL_POLICIES:
            raise DagDefinitionError(
                f"task '{task_id}': pull_policy must be one of {', '.join(PULL_POLICIES)}, "
                f"got {pull_policy!r}"
            )
        if cpus is not None and cpus <= 0:
            raise DagDefinitionError(f"task '{task_id}': cpus must be > 0, got {cpus!r}")
        if docker_conn is not None:
            try:
                check_docker_url(docker_conn)
            except DockerTaskError as exc:
                raise DagDefinitionError(f"task '{task_id}': {exc}") from None
        try:
            parsed_mounts = [parse_mount(m) for m in mounts or ()]
        except DagDefinitionError as exc:
            raise DagDefinitionError(f"task '{task_id}': {exc}") from None
        super().__init__(task_id, **kwargs)
        self.image = image
        self.mounts = parsed_mounts
        self.command = list(command) if isinstance(command, list | tuple) else command
        self.environment = dict(environment or {})
        self.network_mode = network_mode
        self.auto_remove = auto_remove
        self.cpus = cpus
        self.mem_limit = mem_limit
        self.pull_policy = pull_policy
        self.docker_conn = docker_conn
        self.docker_conn_id = docker_conn_id
        self.stop_timeout = stop_timeout
        self._auth: dict[str, str] | None = None
        # Set while a container of this try may exist: what to remove if the try stops.
        self._running: tuple[str, dict[str, str]] | None = None

    # -- execution ----------------------------------------------------------
    def execute(self, context: dict[str, Any]) -> str | None:
        url = resolve_docker_host(self.docker_conn)
        self._auth = registry_auth(self.docker_conn_id, self.image)
        labels = {
            f"{LABEL}dag_id": context["dag_id"],
            f"{LABEL}task_id": self.task_id,
            f"{LABEL}run_id": context["run_id"],
            f"{LABEL}try_number": str(context["try_number"]),
        }
        environment = {
            **self.environment,
            "FLOWSCHED_DAG_ID": context["dag_id"],
            "FLOWSCHED_TASK_ID": self.task_id,
            "FLOWSCHED_RUN_ID": context["run_id"],
            "FLOWSCHED_TRY_NUMBER": str(context["try_number"]),
            "FLOWSCHED_LOGICAL_DATE": context["logical_date"].isoformat(),
        }
        with _api_errors(url, self.image), contextlib.closing(connect(url)) as client:
            _remove_containers(client, _instance_filter(labels), keep_try=labels)
            self._ensure_image(client, url)
            self._running = (url, labels)
            try:
                code, oom, last_line = self._run(client, url, environment, labels)
            except BaseException:
                self._discard()
                raise
            self._running = None
        if code != 0:
            why = _exit_reason(code, oom, self.mem_limit)
            raise DockerTaskError(f"container of image {self.image} exited with code {code}{why}")
        return last_line

    def _run(
        self, client: DockerClient, url: str, environment: dict[str, str], labels: dict[str, str]
    ) -> tuple[int, bool, str | None]:
        """Create, start and follow the container; (exit code, OOM-killed, last line)."""
        container = client.containers.create(
            self.image,
            self.command,
            environment=environment,
            labels=labels,
            mounts=self.mounts or None,
            network_mode=self.network_mode,
            nano_cpus=int(self.cpus * 1e9) if self.cpus else None,
            mem_limit=self.mem_limit,
            detach=True,
        )
        log.info("created container %s of image %s on %s", container.short_id, self.image, url)
        container.start()
        copier = _OutputCopier(container, url)
        copier.start()
        try:
            code = int(container.wait()["StatusCode"])
            last_line = copier.finish()
        finally:
            copier.close()
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        if self.auto_remove:
            container.remove(force=True)
        return code, oom, last_line

    def _ensure_image(self, client: DockerClient, url: str) -> None:
        import docker.errors
        import docker.utils

        if self.pull_policy != "always":
            try:
                client.images.get(self.image)
                return
            except docker.errors.ImageNotFound:
                if self.pull_policy == "never":
                    raise DockerTaskError(
                        f"image {self.image} is not on the Docker endpoint {url} and "
                        "pull_policy is 'never': load or pull it there first"
                    ) from None
        log.info("pulling image %s on %s (pull_policy=%s)", self.image, url, self.pull_policy)
        # The low-level call: the high-level images.pull() drops the errors the engine
        # reports inside the pull's progress stream (a registry that is down, say).
        repository, tag = docker.utils.parse_repository_tag(self.image)
        pulled = client.api.pull(
            repository, tag=tag or "latest", stream=True, decode=True, auth_config=self._auth
        )
        for event in pulled:
            if "error" in event:
                raise DockerTaskError(
                    f"cannot pull image {self.image} through {url}: {event['error']}"
                )
            if event.get("status") and not event.get("progressDetail"):
                log.info(
                    "pull %s: %s",
                    self.image,
                    " ".join(str(event[key]) for key in ("id", "status") if event.get(key)),
                )

    def on_kill(self) -> None:
        self._discard()

    def _discard(self) -> None:
        """Stop and remove this try's container(s), found by label: no orphans."""
        running, self._running = self._running, None
        if running is None:
            return
        url, labels = running
        label_filter = [f"{key}={value}" for key, value in labels.items()]
        try:
            with contextlib.closing(connect(url)) as client:
                _remove_containers(client, label_filter, self.stop_timeout)
        except Exception:
            log.exception("could not remove the container of %s on %s", self.task_id, url)


def registry_auth(conn_id: str | None, image: str) -> dict[str, str] | None:
    """Registry credentials from the connection ``conn_id``, as Airflow's DockerHook reads them.

    ``host[:port]`` is the registry, ``login``/``password`` the credentials, the extra may
    hold ``email``. They are sent only for an image of that registry: credentials of one
    registry are never offered to another.
    """
    if conn_id is None:
        return None
    from docker.auth import resolve_repository_name
    from docker.utils import parse_repository_tag

    from flowsched.connection import ConnectionNotFound
    from flowsched.hooks.base import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except ConnectionNotFound as exc:
        raise DockerTaskError(f"docker_conn_id: {exc}") from None
    if not conn.host or not conn.login:
        raise DockerTaskError(
            f"connection '{conn_id}' needs the registry as host (and port) and a login"
        )
    registry = f"{conn.host}:{conn.port}" if conn.port else conn.host
    registry = registry.split("://", 1)[-1].rstrip("/")
    image_registry, _ = resolve_repository_name(parse_repository_tag(image)[0])
    if image_registry != registry:
        raise DockerTaskError(
            f"image {image} is on registry {image_registry}, but connection '{conn_id}' "
            f"holds credentials for {registry}: not sending them there"
        )
    auth = {"username": conn.login, "password": conn.password or "", "serveraddress": registry}
    if conn.extra_dejson.get("email"):
        auth["email"] = str(conn.extra_dejson["email"])
    return auth


def _exit_reason(code: int, oom: bool, mem_limit: str | int | None) -> str:
    """Why a container died of a signal, as far as the engine tells.

    Podman does not always report OOM kills, so a SIGKILL under a memory limit
    is named as a likely one.
    """
    if oom:
        return f" (killed: out of memory, mem_limit={mem_limit})"
    try:
        name = signal.Signals(code - 128).name if code > 128 else None
    except ValueError:
        name = None
    if name is None:
        return ""
    if name == "SIGKILL" and mem_limit is not None:
        return f" (killed by SIGKILL: out of memory under mem_limit={mem_limit}?)"
    return f" (killed by {name})"


def _instance_filter(labels: dict[str, str]) -> list[str]:
    """Label filter for every try of one task instance."""
    keys = (f"{LABEL}dag_id", f"{LABEL}task_id", f"{LABEL}run_id")
    return [f"{key}={labels[key]}" for key in keys]


def _remove_containers(
    client: DockerClient,
    label_filter: list[str],
    stop_timeout: int = 0,
    keep_try: dict[str, str] | None = None,
) -> None:
    """Stop (SIGTERM, then SIGKILL after ``stop_timeout`` s) and remove matching containers.

    With ``keep_try``, this is the start-of-try sweep: containers of *earlier*
    tries of the same task instance, left by a try that was killed too hard to
    clean up after itself.
    """
    for container in client.containers.list(all=True, filters={"label": label_filter}):
        if keep_try is not None:
            key = f"{LABEL}try_number"
            if container.labels.get(key) == keep_try[key]:
                continue
        log.warning(
            "stopping and removing container %s (%s)",
            container.short_id,
            ", ".join(
                f"{k.removeprefix(LABEL)}={v}"
                for k, v in sorted(container.labels.items())
                if k.startswith(LABEL)
            ),
        )
        if container.status == "running":
            container.stop(timeout=stop_timeout)
        container.remove(force=True)


def _not_yet_copied(lines: list[bytes], seen: Counter[bytes]) -> list[bytes]:
    """``lines`` (the finished log, its last item the unended tail) less those already
    copied (``seen``, counted: a line written twice is copied twice), in order."""
    left = Counter(seen)
    rest = []
    for raw in lines[:-1]:
        if left[raw] > 0:
            left[raw] -= 1
        else:
            rest.append(raw)
    return [*rest, lines[-1]]


class _OutputCopier(threading.Thread):
    """Copies the container's output into the task log as whole lines, as it comes.

    It runs beside the main thread, which waits for the container to exit: the
    exit decides when the task ends, not the end of the log stream, because
    Podman's Docker API can leave a follow stream open after its container
    exited. What the stream did not deliver is then read from the finished log.

    stdout and stderr arrive as one stream (Podman does not reliably serve them
    apart), so a line that stdout has not ended yet when stderr writes one is
    continued by the stderr line, as on a terminal.
    """

    def __init__(self, container: Container, url: str) -> None:
        super().__init__(daemon=True, name="container-output")
        self.container = container
        self.url = url
        self.stream: Any = None
        self.lock = threading.Lock()
        self.seen: Counter[bytes] = Counter()  # the whole lines copied so far
        self.pending = b""  # a line not yet ended
        self.last_line: str | None = None
        self.closed = False

    def run(self) -> None:
        try:
            # A client of its own, without a timeout: Podman answers a follow request only
            # once there is output, and a task may well be silent for minutes.
            version = self.container.client.api.api_version
            with contextlib.closing(connect(self.url, stream=True, version=version)) as client:
                self.stream = client.api.logs(self.container.id, stream=True, follow=True)
                if self.closed:
                    self.close()
                for chunk in self.stream:
                    self._take(chunk)
        except Exception:
            if not self.closed:  # else: the stream was closed under us, as intended
                log.warning("stopped copying the container's output", exc_info=True)

    def _take(self, chunk: bytes) -> None:
        with self.lock:
            if self.closed:
                return
            self.pending += chunk
            *lines, self.pending = self.pending.split(b"\n")
            for raw in lines:
                self.seen[raw] += 1
                self._write(raw)

    def _write(self, raw: bytes) -> None:
        self.last_line = raw.decode("utf-8", errors="replace")
        sys.stdout.write(self.last_line + "\n")
        sys.stdout.flush()

    def finish(self, grace: float = 2.0) -> str | None:
        """After the container exited: copy the rest, even an unended last line; the last line.

        A stream still open after the grace is closed and the rest taken from the
        finished log: by lines, not by byte offset, since Podman does not always give
        stdout and stderr in the same order in the stream and in the stored log (an
        offset then skipped one line and repeated another)."""
        self.join(grace)
        full = self.container.logs(stream=False) if self.is_alive() else None
        with self.lock:
            self.closed = True
            if full is None:
                lines = self.pending.split(b"\n")
            else:
                lines = _not_yet_copied(full.split(b"\n"), self.seen)
            *ended, tail = lines
            for raw in [*ended, tail] if tail else ended:
                self._write(raw)
            self.pending = b""
        self.close()
        return self.last_line

    def close(self) -> None:
        self.closed = True
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.close()
