"""The model registry (`model_paths.toml`): one typed definition of a model entry.

`ModelEntry` holds what every backend shares; each backend's own fields are its `BackendOptions`
(deploy/registry/options.py), validated with the catalogue the caller passes. Together they are
the single source for validation, for rendering `supervisord.conf`, for the worker launcher and
for the `add-model` CLI (whose options are generated from the fields, the way llama-cpp-python's
`server/settings.py` drives its CLI).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from deploy.registry.host import HostInfo, describe_cores
from deploy.registry.options import BackendOptions, Catalogue
from deploy.registry.paths import FleetPaths, expand_path
from deploy.registry.sizes import fmt_size, parse_duration, parse_size
from deploy.registry.templates import AUTO, known_templates


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
        description="The model: a GGUF file, a Hugging Face folder or a server's base URL, as its backend takes. "
        "'$FLEET_CACHE' and '~' are expanded.",
        json_schema_extra={"fix": "point it at the downloaded file or folder"},
    )
    backend: str = Field(
        description="How the model runs (one of the backends below; `python -m deploy reference` lists them).",
        json_schema_extra={"fix": "use a backend listed by `python -m deploy reference`"},
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
        default=AUTO,
        description="How prompts are written: \"auto\", the template the model ships (a GGUF's "
                    "tokenizer.chat_template, a folder's tokenizer_config.json), rendered as llama.cpp and "
                    "transformers render it; or a FastChat conversation template by name, for a model that ships "
                    "none or a wrong one (see `python -m deploy templates`).",
        json_schema_extra={"fix": "use a name listed by `python -m deploy templates`"},
    )
    thinking: Literal["default", "on", "off"] = Field(
        default="default", description="For a model that thinks (writes a reasoning trace before its answer): on "
        "or off when a request does not say. off turns the template's switch off (enable_thinking, as Qwen3's) "
        "and gives a template without one (DeepSeek-R1's) a thinking budget of 0; default: the model's own "
        "template decides. A request's reasoning_effort, chat_template_kwargs or thinking wins.")
    reasoning_budget: int | None = Field(
        default=None, ge=0, description="The most tokens a reasoning trace may take when a request sets no budget "
        "of its own; then the model is made to close its reasoning and answer, so a thinking model answers in "
        "bounded time on a CPU. Default: no limit.")
    context_length: int = Field(default=4096, ge=128, description="Tokens per request (prompt + answer).")
    concurrency: int = Field(default=4, ge=1, le=64, description="Requests served at once (llama.cpp batches them).")
    threads: int | None = Field(default=None, ge=1, description="Compute threads; default: number of cores.")
    serves: str | None = Field(default=None, description="The model name this worker registers under (default: "
                               "`name`). Entries that serve the same name are replicas: the controller balances "
                               "between them and routes around one that stops answering.")
    source: str = Field(default="", description="Where the model came from, e.g. modelscope:qwen/Qwen-7B-Chat.")
    keep_loaded: bool = Field(default=False, description="Never unload it to make room for another model (see "
                              "[deployment] memory_limit); it loads at start-up, whatever else waits.")
    idle_unload: float | None = Field(default=None, gt=0, description="Unload it after this long unused, even with "
                                      "room to spare, e.g. \"10m\" (Ollama's keep_alive); default: only when memory "
                                      "is needed. The worker stays up; the next request loads it again.")
    # The backend's own fields: flat in the file, validated by the backend's class (see below).
    options: SerializeAsAny[BackendOptions] = Field(default_factory=BackendOptions, exclude=False)

    @model_validator(mode="wrap")
    @classmethod
    def _backend_options(cls, data: Any, handler, info: ValidationInfo) -> "ModelEntry":
        """Split an entry as written into the shared fields and its backend's own, and validate the
        latter with that backend's options class from the catalogue in the validation context."""
        if not isinstance(data, dict) or isinstance(data.get("options"), BackendOptions):
            return handler(data)
        catalogue: Catalogue | None = (info.context or {}).get("catalogue")
        if catalogue is None:
            raise ValueError("no backend catalogue to validate this entry with. Fix (for developers): parse with "
                             "deploy.backends.parse_registry / load_registry")
        backend = data.get("backend")
        if isinstance(backend, str) and backend in catalogue.retired:
            raise ValueError(f"backend '{backend}' is no longer offered: {catalogue.retired[backend]}")
        if isinstance(backend, str) and backend not in catalogue.options:
            raise ValueError(f"unknown backend '{backend}'. Fix: use one of: {', '.join(catalogue.names())}")
        shared = {k: v for k, v in data.items() if k in cls.model_fields}
        own = {k: v for k, v in data.items() if k not in cls.model_fields}
        options = catalogue.options[backend].model_validate(own) if isinstance(backend, str) else BackendOptions()
        return handler({**shared, "options": options})

    @model_serializer(mode="wrap")
    def _flat(self, handler) -> dict:
        """Written back flat, as in the file."""
        out = handler(self)
        out.update(out.pop("options", None) or {})
        return out

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

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> int:
        return parse_size(v)

    @field_validator("idle_unload", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @property
    def resolved_path(self) -> Path:
        return expand_path(self.path)

    @property
    def thinking_default(self) -> dict:
        """What a request that says nothing about thinking gets (the API applies it, deploy/api/conversation.py)."""
        return {"enabled": {"on": True, "off": False}.get(self.thinking), "budget": self.reasoning_budget}

    @property
    def model_name(self) -> str:
        """The name clients ask for (several entries may serve one)."""
        return self.serves or self.name

    @property
    def n_threads(self) -> int:
        return self.threads or len(self.cores)



POOL_RESERVE = 2 * 1024**3  # what the default memory_limit leaves for the system and the shared services


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
    allowed_hosts: list[str] = Field(default_factory=list, description="Names (besides loopback and the addresses "
                                     "this host binds) that requests to the fleet's services may carry in their Host "
                                     "header, e.g. [\"fleet.lan\"]; any other name gets 421 (no DNS rebinding).")
    memory_limit: int | None = Field(
        default=None, gt=0, description="The memory this host's models may use together, e.g. \"12GiB\". Models "
        "whose budgets add up to more still all register; they load when first asked, and the idle one used least "
        "recently is unloaded to make room. Default: the machine's memory less 2 GiB (for the system, the controller, "
        "the API server and the web UI).", json_schema_extra={"fix": "write it like \"12GiB\""})
    load_wait: float = Field(default=60.0, gt=0, description="How long a request for a model that is not loaded "
                             "waits for room in the memory pool (every loaded model busy) before a 503 with "
                             "Retry-After, e.g. \"60s\".")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _limit(cls, v: Any) -> int | None:
        return None if v is None else parse_size(v)

    @field_validator("load_wait", mode="before")
    @classmethod
    def _wait(cls, v: Any) -> float:
        return parse_duration(v)

    def pool_limit(self, host: HostInfo) -> int:
        """This host's memory pool: memory_limit, or the machine's memory less POOL_RESERVE."""
        return self.memory_limit or max(0, host.mem_total - POOL_RESERVE)

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


EXIT_CONFIG = 78  # EX_CONFIG: a service refused its configuration; supervisord counts a failed start, not a crash


class RegistryError(Exception):
    """Validation problems, each naming the entry, the field and the fix."""

    def __init__(self, problems: list[str], source: str = "model_paths.toml"):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def _fields_of(where: str, entry: dict, catalogue: Catalogue) -> dict:
    """The fields a location in the file may hold: an entry's shared and backend fields, or
    [deployment]'s."""
    if not where.startswith("models"):
        return dict(Deployment.model_fields) if where == "[deployment]" else dict(Registry.model_fields)
    own = catalogue.options.get(entry.get("backend"), BackendOptions).model_fields
    return {k: v for k, v in {**ModelEntry.model_fields, **own}.items() if k != "options"}


def _fix_for(field: str, fields: dict) -> str:
    extra = fields[field].json_schema_extra if field in fields else None
    return str(extra["fix"]) if isinstance(extra, dict) and "fix" in extra else ""


def _explain(err: ValidationError, data: dict, catalogue: Catalogue) -> list[str]:
    problems = []
    models = data.get("models") if isinstance(data.get("models"), list) else []
    for e in err.errors():
        loc = e["loc"]
        if e["type"] == "value_error" and not loc:
            problems.extend(str(e["ctx"]["error"]).split("\n"))
            continue
        where, entry = "top level", {}
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            entry = models[loc[1]] if loc[1] < len(models) and isinstance(models[loc[1]], dict) else {}
            where = f"models[{loc[1]}] '{entry.get('name', '?')}'"
            loc = loc[2:]
        elif loc and loc[0] == "deployment":
            where = "[deployment]"
            loc = loc[1:]
        field = ".".join(str(x) for x in loc) or "(entry)"
        fields = _fields_of(where, entry, catalogue)
        if e["type"] == "extra_forbidden":
            owner = catalogue.owner_of(field) if where.startswith("models") else None
            if owner:
                problems.append(f"{where}: '{field}' is a field of the {owner} backend, and this entry's backend is "
                                f"{entry.get('backend')}. Fix: remove it.")
            else:
                problems.append(f"{where}: unknown key '{field}'. Fix: remove it or correct the spelling; known keys: "
                                f"{', '.join(fields)}.")
            continue
        if e["type"] == "missing":
            problems.append(f"{where}: required field '{field}' is missing. Fix: add {field} = ...")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        fix = _fix_for(field, fields)
        problems.append(f"{where}, field '{field}': {msg}." + (f" Fix: {fix}." if fix and "Fix:" not in msg else ""))
    return problems


def parse_registry(data: dict, catalogue: Catalogue, source: str = "model_paths.toml") -> Registry:
    """The whole file, validated: shared fields here, each entry's own fields by its backend's
    options class from `catalogue` (deploy.backends.catalogue())."""
    try:
        return Registry.model_validate(data, context={"catalogue": catalogue})
    except ValidationError as err:
        raise RegistryError(_explain(err, data, catalogue), source) from None


def read_registry_data(path: str | os.PathLike | None = None) -> tuple[dict, Path]:
    """The file as plain data, with errors that name the fix."""
    path = FleetPaths.resolve(path).registry
    if not path.exists():
        raise RegistryError(["file not found. Fix: run scripts/setup.sh, which writes it, "
                             "or copy it from a checkout."], str(path))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), path
    except tomllib.TOMLDecodeError as e:
        raise RegistryError([f"not valid TOML ({e}). Fix: correct the syntax at that line."], str(path)) from None


def load_registry(path: str | os.PathLike | None, catalogue: Catalogue) -> Registry:
    """Read and schema-validate the registry (host checks are separate)."""
    data, path = read_registry_data(path)
    return parse_registry(data, catalogue, str(path))


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
            problem = m.options.location_problem(m)
            if problem:
                errors.append(f"{where}, field 'path': {problem}")
            elif m.chat_template == AUTO and m.options.shipped_template(m) == "":
                errors.append(f"{where}, field 'chat_template': \"auto\" renders the template the model ships, and "
                              f"{m.resolved_path.name} ships none. Fix: set chat_template to a name listed by "
                              f"`python -m deploy templates` (qwen-7b-chat for Qwen-7B-Chat).")
        warnings.extend(f"{where}: {w}" for w in m.options.host_warnings(m))
    errors.extend(check_pool(reg, host))
    names = known_templates()
    for i, m in enumerate(reg.models):
        if m.chat_template not in names:
            errors.append(f"models[{i}] '{m.name}', field 'chat_template': unknown template '{m.chat_template}'. "
                          f"Fix: use one of the names listed by `python -m deploy templates`, "
                          f"e.g. qwen2.5, smollm2, qwen-7b-chat, chatglm3, deepseek-chat.")
    return errors, warnings


def check_pool(reg: Registry, host: HostInfo) -> list[str]:
    """The memory pool against the machine and the budgets: a model whose own budget is larger than
    the pool can never load (an error, with the numbers). Budgets that add up to more than the pool
    are fine: models load on demand (pool_note)."""
    errors = []
    d, limit = reg.deployment, reg.deployment.pool_limit(host)
    if d.memory_limit and d.memory_limit > host.mem_total:
        errors.append(f"[deployment], field 'memory_limit': {fmt_size(d.memory_limit)} is more than this machine's "
                      f"{fmt_size(host.mem_total)} of RAM. Fix: set it to at most {fmt_size(host.mem_total - POOL_RESERVE)}"
                      f" (the machine less 2 GiB for the system and the shared services), or leave it out.")
    where = "memory_limit" if d.memory_limit else f"the default, this machine's {fmt_size(host.mem_total)} less 2 GiB"
    for i, m in enumerate(reg.models):
        if m.memory_budget > limit:
            errors.append(f"models[{i}] '{m.name}', field 'memory_budget': {fmt_size(m.memory_budget)} is more than "
                          f"this host's memory pool of {fmt_size(limit)} ({where}), so it could never load. Fix: lower "
                          f"memory_budget, or raise memory_limit in [deployment] (at most the machine's "
                          f"{fmt_size(host.mem_total)}).")
    kept = [m for m in reg.models if m.keep_loaded]
    if sum(m.memory_budget for m in kept) > limit:
        errors.append(f"field 'keep_loaded': the models kept loaded need {fmt_size(sum(m.memory_budget for m in kept))}"
                      f" together ({', '.join(m.name for m in kept)}), more than this host's memory pool of "
                      f"{fmt_size(limit)}. Fix: keep fewer loaded, or raise memory_limit.")
    return errors


def pool_note(reg: Registry, host: HostInfo) -> str | None:
    """What `check` and `up` say when the models do not all fit in memory at once."""
    total, limit = sum(m.memory_budget for m in reg.models), reg.deployment.pool_limit(host)
    if total <= limit:
        return None
    return (f"the budgets add up to {fmt_size(total)}, more than this host's memory pool of {fmt_size(limit)}: "
            f"every model is served, loaded when first asked, and to make room the idle model used least "
            f"recently is unloaded (docs/memory.md, 'More models than memory').")


def validate_for_host(reg: Registry, host: HostInfo | None = None, check_paths: bool = True) -> list[str]:
    """Raise RegistryError on errors; return warnings."""
    errors, warnings = check_host(reg, host or HostInfo.current(), check_paths)
    if errors:
        raise RegistryError(errors)
    return warnings
