"""Start one model worker, held to its registry entry.

Order matters: every check that can fail fast (path, cores, template, fit)
runs before anything heavy is imported, so a bad entry fails in a second
with a message that names the fix, and supervisord marks it FATAL instead of
restarting it forever. Then the process is pinned to its cores, its memory
budget is applied, and the backend loads.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys

from deploy.config import Backend, ModelEntry, Registry, RegistryError, load_registry, validate_for_host
from deploy.fit import DoesNotFit, require_fit, resolve_dtype
from deploy.limits import apply_memory_budget, pin_to_cores

log = logging.getLogger("deploy.launcher")
EXIT_CONFIG = 78  # EX_CONFIG: supervisord treats it as a failed start, not a crash to retry forever


class LaunchError(Exception):
    pass


def preflight(reg: Registry, entry: ModelEntry) -> None:
    """Everything that can be known wrong before loading; raises LaunchError naming the fix."""
    single = reg.model_copy(update={"models": [entry]})
    try:
        for w in validate_for_host(single):
            log.warning(w)
    except RegistryError as e:
        raise LaunchError(str(e)) from None
    try:
        est = require_fit(entry)
    except DoesNotFit as e:
        raise LaunchError(str(e)) from None
    except Exception as e:  # unreadable file: say so rather than crash inside the loader
        raise LaunchError(f"model '{entry.name}': cannot read {entry.resolved_path} ({e}). "
                          f"Fix: re-download it; scripts/setup.sh checks the default models.") from None
    log.info("memory estimate for '%s': %s", entry.name, est.describe())


def build_worker(reg: Registry, entry: ModelEntry):
    controller = reg.deployment.controller_url
    worker_addr = f"http://{reg.deployment.host}:{entry.port}"
    if entry.backend is Backend.LLAMACPP:
        from deploy.llamacpp_worker import LlamaCppWorker

        return LlamaCppWorker(entry, controller, worker_addr)
    import torch

    torch.set_num_threads(entry.n_threads)
    from deploy.hf_worker import make_transformers_worker

    return make_transformers_worker(entry, controller, worker_addr)


def exec_vllm(reg: Registry, entry: ModelEntry) -> None:
    """GPU hosts: FastChat's own vLLM worker, registered with the same controller."""
    d = reg.deployment
    args = [sys.executable, "-m", "fastchat.serve.vllm_worker",
            "--model-path", str(entry.resolved_path), "--model-names", entry.name,
            "--controller-address", d.controller_url,
            "--worker-address", f"http://{d.host}:{entry.port}",
            "--host", d.host, "--port", str(entry.port),
            "--conv-template", entry.chat_template,
            "--limit-worker-concurrency", str(entry.concurrency)]
    if entry.trust_remote_code:
        args.append("--trust-remote-code")
    os.execv(sys.executable, args)


def worker_info(entry: ModelEntry, lim) -> dict:
    """What this worker is, as reports and the web UI show it (served at /fleet_info)."""
    return {
        "name": entry.name, "backend": entry.backend.value, "cores": sorted(os.sched_getaffinity(0)),
        "threads": entry.n_threads, "memory_budget": entry.memory_budget, "memory_limit": lim.describe(),
        "context_length": entry.context_length, "concurrency": entry.concurrency,
        "chat_template": entry.chat_template,
        "dtype": resolve_dtype(entry.dtype) if entry.backend is Backend.TRANSFORMERS else None,
        "model_file": entry.resolved_path.name, "source": entry.source,
    }


def run_worker(name: str, registry_path: str | None = None, register: bool = True) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        reg = load_registry(registry_path)
        entry = reg.get(name)
        preflight(reg, entry)
    except (RegistryError, LaunchError) as e:
        print(f"ERROR: worker '{name}' not started:\n{e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG

    pin_to_cores(entry.cores, entry.n_threads)
    log.info("pinned to cores %s with %d thread(s)", entry.cores, entry.n_threads)
    lim = apply_memory_budget(entry.memory_budget, entry.backend, f"{entry.name}-{entry.port}")
    log.info("memory budget enforced by %s", lim.describe())
    atexit.register(lim.release)

    if entry.backend is Backend.VLLM:
        exec_vllm(reg, entry)
    try:
        worker = build_worker(reg, entry)
    except Exception as e:
        from deploy.hf_worker import RemoteCodeNotAllowed

        if isinstance(e, RemoteCodeNotAllowed):
            print(f"ERROR: worker '{name}' not started:\n{e}", file=sys.stderr, flush=True)
            return EXIT_CONFIG
        if isinstance(e, MemoryError):
            print(f"ERROR: worker '{name}' ran out of its memory budget while loading ({lim.describe()}). "
                  f"Fix: raise memory_budget in model_paths.toml.", file=sys.stderr, flush=True)
            return EXIT_CONFIG
        raise
    from deploy.worker_app import create_worker_app

    app = create_worker_app(worker, register=register, info=worker_info(entry, lim), on_shutdown=lim.release)
    log.info("worker '%s' (%s) serving on %s:%d", entry.name, entry.backend.value, reg.deployment.host, entry.port)
    uvicorn.run(app, host=reg.deployment.host, port=entry.port, log_level="warning")
    return 0
