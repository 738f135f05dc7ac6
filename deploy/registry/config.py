"""The model registry (`model_paths.toml`): one typed definition of a model entry.

`ModelEntry` is the single source for validation, for rendering
`supervisord.conf`, for the worker launcher and for the `add-model` CLI
(whose options are generated from the fields below, the way
llama-cpp-python's `server/settings.py` drives its CLI).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deploy import backends
from deploy.registry.host import HostInfo, describe_cores
from deploy.registry.paths import FleetPaths, expand_path
from deploy.registry.sizes import fmt_size, parse_size


def parse_cores(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        cores: list[int] = []
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part:
                lo, hi = part.split("-", 1)
                cores.extend(range(int(lo), int(hi) + 1))
            else:
                cores.append(int(part))
        return cores
    return value


class ModelEntry(BaseModel):
    """One downloaded model served by one FastChat worker."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Model name shown by the API and web UI.",
        json_schema_extra={"fix": "use letters, digits, '.', '_' and '-' only, e.g. 'qwen-7b-chat'"},
    )
    path: str = Field(
        description="GGUF file (llama.cpp) or HF folder (transformers, vllm). "
        "'$FLEET_CACHE' and '~' are expanded.",
        json_schema_extra={"fix": "point it at the downloaded file or folder"},
    )
    backend: str = Field(
        description="How the model runs: " + "; ".join(f"{b.name}: {b.summary}" for b in backends.BACKENDS.values()) + ".",
        json_schema_extra={"fix": "use one of: " + ", ".join(backends.names())},
    )
    port: int = Field(ge=1024, le=65535, description="Port of this model's worker.",
                      json_schema_extra={"fix": "pick a free port such as 21002, unique per model"})
    cores: list[int] = Field(
        min_length=1,
        description="CPU cores the worker is pinned to, e.g. [0, 1] or \"0-1\".",
        json_schema_extra={"fix": "list cores that exist on this host, e.g. cores = [0]"},
    )
    memory_budget: int = Field(
        gt=0, description="Memory the worker may use, e.g. \"6GiB\".",
        json_schema_extra={"fix": "write it like \"6GiB\""},
    )
    chat_template: str = Field(
        description="FastChat conversation template name (see `python -m deploy templates`).",
        json_schema_extra={"fix": "use a name listed by `python -m deploy templates`"},
    )
    context_length: int = Field(default=4096, ge=128, description="Tokens per request (prompt + answer).")
    concurrency: int = Field(default=4, ge=1, le=64, description="Requests served at once (llama.cpp batches them).")
    threads: int | None = Field(default=None, ge=1, description="Compute threads; default: number of cores.")
    stream_interval_ms: int = Field(default=50, ge=0, le=1000,
                                    description="llama.cpp: send streamed text at most this often (0: every token).")
    mmap: bool = Field(default=False, description="llama.cpp: map the GGUF instead of reading it. Reading (the default) "
                       "keeps the weights once, in the worker's own memory: with mmap, llama.cpp's repacked copy and "
                       "the mapped file both count in RSS (1.79 vs 1.21 GiB for the 1.5B default), and decode was no "
                       "faster (reading: 1.03 and 1.15 times mmap's speed in two runs of bench/llamacpp_memory.py). "
                       "mmap lets replicas of one file share its pages.")
    poll: int | None = Field(default=None, ge=0, le=100,
                             description="llama.cpp: how hard waiting compute threads spin (0-100, llama.cpp's default "
                                         "50); lower it for models that share cores.")
    flash_attention: Literal["auto", "on", "off"] = Field(
        default="auto", description="llama.cpp flash attention; auto: llama.cpp's choice (on, on this CPU). At 7B, "
        "two streams at once on the engine decoded 4.7-5.4 tok/s in aggregate with it on and 6.7-8.3 off (one "
        "stream: the same); through a worker the difference was within noise; off cost 16 and 29 percent of "
        "prompt speed at 0.5B in two runs (bench/llamacpp_batching.py, bench/seed_scale.py).")
    serves: str | None = Field(default=None, description="The model name this worker registers under (default: "
                               "`name`). Entries that serve the same name are replicas: the controller balances "
                               "between them and routes around one that stops answering.")
    embeddings: bool = Field(default=False, description="llama.cpp: also serve /v1/embeddings (mean-pooled, L2-normed); "
                             "bench/bench.py measures its decode cost (within noise in its engine runs; one single-slot "
                             "run was 7 percent slower), so it is off unless asked. transformers "
                             "workers always serve them.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="transformers weights dtype; auto: bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX), else float32.")
    trust_remote_code: bool = Field(
        default=False, description="Allow the model folder's own Python code (Qwen-7B-Chat, ChatGLM3 need it).")
    source: str = Field(default="", description="Where the model came from, e.g. modelscope:qwen/Qwen-7B-Chat.")

    @field_validator("cores", mode="before")
    @classmethod
    def _cores(cls, v: Any) -> Any:
        return parse_cores(v)

    @field_validator("cores")
    @classmethod
    def _cores_unique(cls, v: list[int]) -> list[int]:
        if any(c < 0 for c in v):
            raise ValueError("core numbers start at 0")
        return sorted(set(v))

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in backends.BACKENDS:
            raise ValueError(f"unknown backend '{v}'")
        return v

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> int:
        return parse_size(v)

    @property
    def resolved_path(self) -> Path:
        return expand_path(self.path)

    @property
    def model_name(self) -> str:
        """The name clients ask for (several entries may serve one)."""
        return self.serves or self.name

    @property
    def flash_attention_on(self) -> bool | None:
        """True/False to set it, None for llama.cpp's own choice."""
        return None if self.flash_attention == "auto" else self.flash_attention == "on"

    @property
    def n_threads(self) -> int:
        return self.threads or len(self.cores)

    @property
    def runtime(self) -> backends.Backend:
        """The backend object that knows how to check, size and run this entry."""
        return backends.get(self.backend)


class Deployment(BaseModel):
    """Addresses of the shared services."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address every service binds to (a worker host: the address "
                                                       "the main host reaches it at).")
    role: Literal["all", "workers"] = Field(
        default="all", description="all: this host runs the controller, API server, web UI and its workers; "
                                   "workers: a worker host, which runs only its workers (see controller_address).")
    controller_host: str | None = Field(
        default=None, description="Where the controller listens, if not at `host`: e.g. \"0.0.0.0\" so that "
                                  "worker hosts can register (they need the fleet secret).")
    controller_address: str | None = Field(
        default=None, description="A worker host's controller, e.g. \"http://192.168.1.10:21001\" "
                                  "(required with role = \"workers\").")
    controller_port: int = Field(default=21001, ge=1024, le=65535)
    api_port: int = Field(default=8000, ge=1024, le=65535)
    webui_port: int = Field(default=7860, ge=1024, le=65535)
    log_dir: str = Field(default="logs", description="Log folder, relative to the repo root.")
    webui_auth_file: str | None = Field(default=None, description="user:password lines; required for a web UI "
                                                                  "bound beyond loopback.")
    fleet_secret_file: str = Field(default="~/.config/fastchat-fleet/fleet.secret",
                                   description="The fleet secret (mode 0600, outside the repository): workers must "
                                               "send it to register. The same file on every host of the fleet.")

    api_keys_file: str | None = Field(default=None, description="API keys, one per line (mode 0600, outside the "
                                      "repository; `python -m deploy keys add` creates it). When set, every API route "
                                      "needs 'Authorization: Bearer KEY'; required for an API bound beyond loopback.")
    cors_origins: list[str] = Field(default_factory=list, description="Web origins allowed to call the API from a "
                                    "browser (e.g. [\"http://localhost:3000\"]); none by default.")

    @property
    def secret_path(self) -> Path:
        return expand_path(self.fleet_secret_file)

    @property
    def api_keys_path(self) -> Path | None:
        return expand_path(self.api_keys_file) if self.api_keys_file else None

    @property
    def controller_bind(self) -> str:
        return self.controller_host or self.host

    @property
    def controller_url(self) -> str:
        """Where this host's programs reach the controller."""
        if self.controller_address:
            return self.controller_address.rstrip("/")
        bind = self.controller_bind
        return f"http://{'127.0.0.1' if bind in ('0.0.0.0', '::') else bind}:{self.controller_port}"

    @model_validator(mode="after")
    def _worker_host_needs_a_controller(self) -> "Deployment":
        if self.role == "workers" and not self.controller_address:
            raise ValueError("role = \"workers\" needs controller_address, the main host's controller, e.g. "
                             "\"http://192.168.1.10:21001\"")
        if self.controller_address and not self.controller_address.startswith(("http://", "https://")):
            raise ValueError("controller_address must be a URL such as \"http://192.168.1.10:21001\"")
        return self


class Registry(BaseModel):
    """The whole `model_paths.toml`."""

    model_config = ConfigDict(extra="forbid")

    deployment: Deployment = Field(default_factory=Deployment)
    models: list[ModelEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "Registry":
        problems = []
        seen_names: dict[str, int] = {}
        d = self.deployment
        taken = {d.controller_port: "deployment.controller_port", d.api_port: "deployment.api_port",
                 d.webui_port: "deployment.webui_port"}
        for i, m in enumerate(self.models):
            if m.name in seen_names:
                problems.append(f"models[{i}] '{m.name}', field 'name': duplicate of models[{seen_names[m.name]}]. "
                                f"Fix: give each model its own name.")
            seen_names.setdefault(m.name, i)
            if m.port in taken:
                problems.append(f"models[{i}] '{m.name}', field 'port': {m.port} is already used by {taken[m.port]}. "
                                f"Fix: give each worker its own port.")
            taken.setdefault(m.port, f"models[{i}] '{m.name}'")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def get(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.models) or "none"
        raise RegistryError([f"no model named '{name}' in model_paths.toml (known: {known}). "
                             f"Fix: use one of those names or add an entry."])


class RegistryError(Exception):
    """Validation problems, each naming the entry, the field and the fix."""

    def __init__(self, problems: list[str], source: str = "model_paths.toml"):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _fix_for(loc: tuple) -> str:
    fields = ModelEntry.model_fields if loc and loc[0] == "models" else Deployment.model_fields
    for part in loc:
        if isinstance(part, str) and part in fields:
            extra = fields[part].json_schema_extra or {}
            if isinstance(extra, dict) and "fix" in extra:
                return str(extra["fix"])
    return ""


def _explain(err: ValidationError, data: dict) -> list[str]:
    problems = []
    for e in err.errors():
        loc = e["loc"]
        if e["type"] == "value_error" and not loc:
            problems.extend(str(e["ctx"]["error"]).split("\n"))
            continue
        where = "top level"
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            name = (data.get("models") or [{}])[loc[1]].get("name", "?") if isinstance(data.get("models"), list) else "?"
            where = f"models[{loc[1]}] '{name}'"
            loc = loc[2:]
        elif loc and loc[0] == "deployment":
            where = "[deployment]"
            loc = loc[1:]
        field = ".".join(str(x) for x in loc) or "(entry)"
        if e["type"] == "extra_forbidden":
            known = ", ".join(ModelEntry.model_fields if where.startswith("models") else
                              Deployment.model_fields if where == "[deployment]" else Registry.model_fields)
            problems.append(f"{where}: unknown key '{field}'. Fix: remove it or correct the spelling; known keys: {known}.")
            continue
        if e["type"] == "missing":
            problems.append(f"{where}: required field '{field}' is missing. Fix: add {field} = ...")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        fix = _fix_for(e["loc"])
        problems.append(f"{where}, field '{field}': {msg}." + (f" Fix: {fix}." if fix else ""))
    return problems


def parse_registry(data: dict, source: str = "model_paths.toml") -> Registry:
    try:
        return Registry.model_validate(data)
    except ValidationError as err:
        raise RegistryError(_explain(err, data), source) from None


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read and schema-validate the registry (host checks are separate)."""
    path = FleetPaths.resolve(path).registry
    if not path.exists():
        raise RegistryError(["file not found. Fix: run scripts/setup.sh, which writes it, "
                             "or copy it from a checkout."], str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RegistryError([f"not valid TOML ({e}). Fix: correct the syntax at that line."], str(path)) from None
    return parse_registry(data, str(path))


def check_host(reg: Registry, host: HostInfo, check_paths: bool = True) -> tuple[list[str], list[str]]:
    """Problems (errors, warnings) that depend on this machine, not on the file alone."""
    errors: list[str] = []
    warnings: list[str] = []
    owner: dict[int, str] = {}
    for i, m in enumerate(reg.models):
        where = f"models[{i}] '{m.name}'"
        missing = sorted(set(m.cores) - host.cores)
        if missing:
            errors.append(f"{where}, field 'cores': core(s) {describe_cores(missing)} do not exist on this host "
                          f"(it has {describe_cores(host.cores)}). Fix: use cores within {describe_cores(host.cores)}.")
        for c in m.cores:
            if c in owner:
                warnings.append(f"{where}, field 'cores': core {c} is shared with '{owner[c]}'; "
                                f"the two will compete for it when both are busy.")
            owner.setdefault(c, m.name)
        if check_paths:
            p = m.resolved_path
            problem = (f"{p} does not exist. Fix: download the model (scripts/setup.sh for the defaults, "
                       f"python -m deploy download for others) or correct the path."
                       if not p.exists() else m.runtime.path_problem(p))
            if problem:
                errors.append(f"{where}, field 'path': {problem}")
        warnings.extend(f"{where}: {w}" for w in m.runtime.host_warnings(m))
    total = sum(m.memory_budget for m in reg.models)
    if total > host.mem_total:
        errors.append(f"field 'memory_budget': the budgets add up to {fmt_size(total)}, more than this machine's "
                      f"{fmt_size(host.mem_total)} of RAM. Fix: lower the budgets or remove a model "
                      f"({', '.join(f'{m.name}={fmt_size(m.memory_budget)}' for m in reg.models)}).")
    from deploy.registry.templates import known_templates  # late: imports FastChat's conversation module

    names = known_templates()
    for i, m in enumerate(reg.models):
        if m.chat_template not in names:
            errors.append(f"models[{i}] '{m.name}', field 'chat_template': unknown template '{m.chat_template}'. "
                          f"Fix: use one of the names listed by `python -m deploy templates`, "
                          f"e.g. qwen2.5, smollm2, qwen-7b-chat, chatglm3, deepseek-chat.")
    return errors, warnings


def validate_for_host(reg: Registry, host: HostInfo | None = None, check_paths: bool = True) -> list[str]:
    """Raise RegistryError on errors; return warnings."""
    errors, warnings = check_host(reg, host or HostInfo.current(), check_paths)
    if errors:
        raise RegistryError(errors)
    return warnings


def fields_markdown() -> str:
    """The model_paths.toml reference table for the README, from the same definition."""
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f in ModelEntry.model_fields.items():
        choices = " / ".join(f.annotation.__args__) if getattr(f.annotation, "__origin__", None) is Literal else None
        t = {"memory_budget": "size string", "cores": "list of ints, or \"0-1\"", "threads": "int",
             "backend": " / ".join(backends.names())}.get(name, choices or getattr(f.annotation, "__name__", ""))
        default = "required" if f.is_required() else f"`{f.default!r}`".replace("'", '"')
        rows.append(f"| `{name}` | {t} | {default} | {f.description} |")
    return "\n".join(rows)
