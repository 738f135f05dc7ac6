"""Start one model worker, held to its registry entry.

Order matters: every check that can fail fast (path, cores, template, fit) runs before
anything heavy is imported, so a bad entry fails in a second with a message that names the
fix, and supervisord marks it FATAL instead of restarting it forever. Then the process is
pinned to its cores, its memory budget is applied, and the backend builds its worker.
The launcher knows no backend by name: the entry's backend object does the specific parts.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

from deploy import backends
from deploy.backends import ConfigProblem, FleetWorker
from deploy.registry.config import EXIT_CONFIG, ModelEntry, Registry, RegistryError, validate_for_host
from deploy.registry.host import HostInfo, is_loopback
from deploy.registry.paths import runtime_python
from deploy.wire.access import HostGuard, OnlyFrom, host_address, own_host_names
from deploy.wire.secret import SecretError, read_secret
from deploy.worker.app import create_worker_app
from deploy.backends.fit import DoesNotFit, require_fit
from deploy.worker.limits import MemoryLimit, apply_memory_budget, pin_to_cores
from deploy.worker.membership import Joining

log = logging.getLogger("deploy.worker.launcher")


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


def in_its_runtime(entry: ModelEntry, name: str, registry: Path | None) -> int | None:
    """Run on in the Python of the entry's runtime: None if this is it; else this process becomes
    that runtime's `deploy worker` (a model whose own code needs an old transformers has one of its
    own), or a refusal naming the fix when that runtime is not built."""
    runtime = entry.options.runtime_of(entry)
    python = runtime_python(runtime)
    if Path(sys.prefix).resolve() == python.parent.parent.resolve():
        return None
    if not python.exists():
        return _refuse(name, f"model '{entry.name}' runs in the {runtime} runtime (its own code needs an older "
                             f"transformers), which is not built. Fix: python -m deploy runtimes (scripts/setup.sh runs "
                             f"it), then start the worker again.")
    log.info("model '%s' runs in the %s runtime: %s", entry.name, runtime, python)
    args = [str(python), "-m", "deploy", *(["--registry", str(registry)] if registry else []), "worker", name]
    os.execv(str(python), args)
    return 1  # not reached


def model_bytes(path: Path) -> int:
    """The model's size on disk: the GGUF file, or an HF folder's files."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def worker_info(entry: ModelEntry, lim: MemoryLimit) -> dict:
    """What this worker is, as reports and the web UI show it (served at /fleet_info)."""
    backend = backends.of(entry)
    return {"model_bytes": model_bytes(entry.resolved_path),
        "name": entry.name, "cores": sorted(os.sched_getaffinity(0)),
        "threads": entry.n_threads, "memory_budget": entry.memory_budget, "memory_limit": lim.describe(),
        "context_length": entry.context_length, "concurrency": entry.concurrency,
        "chat_template": entry.chat_template, "model_file": entry.resolved_path.name, "source": entry.source,
        "thinking": entry.thinking_default, **backend.describe(entry), "features": sorted(backend.features_for(entry)),
    }


def _refuse(name: str, message: str) -> int:
    print(f"ERROR: worker '{name}' not started:\n{message}", file=sys.stderr, flush=True)
    return EXIT_CONFIG


def run_worker(reg: Registry, name: str, registry: Path | None = None) -> int:
    """Serve model `name` of `reg` (read from the file `registry`, which its runtime reads again)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        entry = reg.get(name)
        preflight(reg, entry)
    except (RegistryError, LaunchError) as e:
        return _refuse(name, str(e))
    moved = in_its_runtime(entry, name, registry)
    if moved is not None:
        return moved

    backend = backends.of(entry)
    pin_to_cores(entry.cores, entry.n_threads)
    log.info("pinned to cores %s with %d thread(s)", entry.cores, entry.n_threads)
    lim = apply_memory_budget(entry.memory_budget, backend.address_space_headroom, f"{entry.name}-{entry.port}")
    log.info("memory budget enforced by %s", lim.describe())
    atexit.register(lim.release)

    d = reg.deployment
    try:
        secret = read_secret(d.secret_path)
    except SecretError as e:
        return _refuse(name, str(e))
    worker_url = f"http://{d.host}:{entry.port}"
    try:
        worker = backend.build_worker(entry, d.controller_url, worker_url)  # asleep: the model loads on demand
    except ConfigProblem as e:
        return _refuse(name, str(e))
    if not isinstance(worker, FleetWorker):
        raise TypeError(f"backend {backend.name} built a worker without the FleetWorker interface")
    pool = {"host": d.host, "limit": d.pool_limit(HostInfo.current()), "model": entry.model_name,
            "budget": entry.memory_budget, "keep_loaded": entry.keep_loaded}
    app = create_worker_app(worker, info=worker_info(entry, lim), on_shutdown=lim.release,
                            joining=Joining(d.controller_url, worker_url, secret, pool), load_wait=d.load_wait,
                            idle_unload=entry.idle_unload, keep_loaded=entry.keep_loaded)
    if not is_loopback(d.host):  # reachable from the network: only the controller's host may call it
        app = OnlyFrom(app, {host_address(d.controller_url)})
    app = HostGuard(app, own_host_names([d.host], d.allowed_hosts))
    log.info("worker '%s' (%s) serving on %s:%d", entry.name, entry.backend, d.host, entry.port)
    uvicorn.run(app, host=d.host, port=entry.port, log_level="warning")
    return 0
