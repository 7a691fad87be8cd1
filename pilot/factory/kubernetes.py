"""Pilots as Kubernetes pods through the ``kubernetes`` client (``dawms[factory]``).

Each pilot is one pod (``restartPolicy: Never``) in the factory's namespace, its
container's command the pilot's argv as a list (no shell). Its token goes into a
Secret per batch and reaches the container as ``$DAWMS_TOKEN`` through
``secretKeyRef``: never in the pod spec, which every reader of the namespace sees.
Names are ``dawms-pilot-<random>`` (DNS-1123 whatever the queue); the queue goes
in a label value made of its safe characters. Status is the pod's phase; a pod
being deleted (cancel) is still ``RUNNING`` until it is gone, then ``CANCELLED``.
The pod's log is copied to ``log_path`` when the pilot is seen ended (a pod
deleted by cancel takes its log with it). Only pods this factory created are
touched. The tests run it against a fake API server (tests/pilot/fake_kube.py).
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dawms.pilot.factory.base import (
    PILOT_ENDED,
    TOKEN_ENVS,
    PilotFactory,
    PilotHandle,
    PilotStatus,
    SubmitError,
    check_submit,
    pilot_argv,
)

LOG_MAX = 16 * 1024 * 1024
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
_QUANTITY = re.compile(r"^[0-9]{1,9}(m|Mi|Gi)?$")
_PHASES = {"Pending": PilotStatus.PENDING, "Running": PilotStatus.RUNNING,
           "Succeeded": PilotStatus.DONE, "Failed": PilotStatus.FAILED}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _valid(key: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if key == "image":
        return bool(_IMAGE.match(value))
    if key in ("python", "workdir"):  # paths in the image
        return value.startswith("/") and len(value) < 256 and value.isprintable()
    return key in ("cpu", "memory") and bool(_QUANTITY.match(value))


def pod_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The checked ``kubernetes`` settings of a queue: image, python and workdir (paths
    in the image), cpu, memory."""
    out: dict[str, Any] = {"image": "dawms-pilot:latest", "python": "python3",
                           "workdir": "/tmp"}
    for key, value in settings.items():
        if not _valid(str(key), value):
            raise SubmitError(f"bad kubernetes setting {str(key)[:80]!r}: "
                              f"{str(value)[:80]!r} (image, python, workdir, cpu, memory)")
        out[key] = value
    return out


@dataclass
class _Pod:
    log_path: Path
    secret: str | None
    cancelled: bool = False
    final: PilotStatus | None = None


class KubernetesFactory(PilotFactory):
    """Creates pilot pods in ``namespace`` through ``api_client`` (default: the
    cluster of the kube config, or the one this runs in)."""

    name = "kubernetes"
    settings_keys = frozenset({"kubernetes"})

    def __init__(self, api_client: Any = None, namespace: str = "default") -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self._pods: dict[str, _Pod] = {}

    def submit(
        self, server_url: str, queue: str, n: int, workdir: Path, *,
        env: Mapping[str, str] | None = None, token: str | None = None,
        token_file: Path | None = None, kubernetes: Mapping[str, Any] | None = None,
        **opts: Any,
    ) -> list[PilotHandle]:
        """Create ``n`` pods; ``kubernetes`` settings: image, python and workdir (paths
        in the image), cpu, memory. ``env`` is set in the container (token names refused)."""
        from kubernetes import client

        check_submit(server_url, queue, n, self.max_per_submit)
        pod = pod_settings(kubernetes or {})
        env = dict(env or {})
        if bad := [k for k in env if not _ENV_NAME.match(k) or k in TOKEN_ENVS]:
            raise SubmitError(f"environment names refused: {[k[:64] for k in bad]}")
        try:
            pilot_argv(server_url, queue, Path("/tmp"), **opts)
        except TypeError as exc:
            raise SubmitError(str(exc)) from None
        if token is None and token_file is not None:
            token = Path(token_file).read_text()[:8192].strip()
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        secret = None
        env_vars = [client.V1EnvVar(name=k, value=v) for k, v in sorted(env.items())]
        if token:
            secret = f"dawms-pilot-token-{uuid.uuid4().hex[:12]}"
            self.core.create_namespaced_secret(self.namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=secret, labels={"app": "dawms-pilot"}),
                string_data={"token": token}, type="Opaque"))
            env_vars.append(client.V1EnvVar(name="DAWMS_TOKEN", value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=secret, key="token"))))
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", queue)[:63].strip("_.-") or "q"
        resources = {k: pod[k] for k in ("cpu", "memory") if k in pod}
        handles = []
        for _ in range(n):
            tag = uuid.uuid4().hex[:12]
            name = f"dawms-pilot-{tag}"
            pilot_id = f"{socket.gethostname()}:kubernetes:{tag}"
            argv = pilot_argv(server_url, queue, Path(pod["workdir"]) / name, pilot_id=pilot_id,
                              python=pod["python"], **opts)
            body = client.V1Pod(
                metadata=client.V1ObjectMeta(name=name, labels={"app": "dawms-pilot",
                                                                "dawms-queue": label}),
                spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
                    name="pilot", image=pod["image"], command=argv, env=env_vars,
                    working_dir=pod["workdir"],
                    resources=client.V1ResourceRequirements(requests=resources or None))]))
            self.core.create_namespaced_pod(self.namespace, body)
            log_path = workdir / f"pilot-{tag}.log"
            self._pods[name] = _Pod(log_path, secret)
            handles.append(PilotHandle(self.name, name, pilot_id, log_path))
        return handles

    def poll(self, handle: PilotHandle) -> PilotStatus:
        from kubernetes.client.exceptions import ApiException

        self._own(handle)
        pod = self._pods.get(handle.id)
        if pod is None:
            return PilotStatus.UNKNOWN
        if pod.final is not None:
            return pod.final
        try:
            got = self.core.read_namespaced_pod(handle.id, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            pod.final = PilotStatus.CANCELLED if pod.cancelled else PilotStatus.FAILED
            return pod.final
        status = _PHASES.get(got.status.phase if got.status else "", PilotStatus.PENDING)
        if status in PILOT_ENDED:
            self._save_log(handle, pod)
            pod.final = PilotStatus.CANCELLED if pod.cancelled else status
            return pod.final
        return status

    def _save_log(self, handle: PilotHandle, pod: _Pod) -> None:
        text = self.core.read_namespaced_pod_log(handle.id, self.namespace,
                                                 limit_bytes=LOG_MAX)
        pod.log_path.write_text(text if isinstance(text, str) else str(text))

    def cancel(self, handle: PilotHandle) -> None:
        self._own(handle)
        pod = self._pods.get(handle.id)
        if pod is None or self.poll(handle) in PILOT_ENDED:
            return
        pod.cancelled = True
        self.core.delete_namespaced_pod(handle.id, self.namespace, grace_period_seconds=30)

    def cleanup(self, handle: PilotHandle) -> None:
        from kubernetes.client.exceptions import ApiException

        self._own(handle)
        pod = self._pods.get(handle.id)
        if pod is None:
            return
        if self.poll(handle) not in PILOT_ENDED:
            raise ValueError(f"pilot {handle.pilot_id} (pod {handle.id}) is still running; "
                             "cancel it first")
        del self._pods[handle.id]
        for delete, name in ((self.core.delete_namespaced_pod, handle.id),
                             (self.core.delete_namespaced_secret, pod.secret)):
            if name and (delete is not self.core.delete_namespaced_secret
                         or not any(p.secret == name for p in self._pods.values())):
                try:
                    delete(name, self.namespace)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
