"""FastChat 0.2.36, as we use it: the only module that bypasses or reaches into FastChat's own code.

Every upstream function or class body we skip, replace or depend on the internals of is listed in
UPSTREAM with the sha256 of its source; `check_upstream()` fails (and tests/test_compat.py with it)
the moment any of them changes, naming the piece to re-check. What is here:

1. The controller: `Controller.__init__` starts a thread that sleeps forever and checks workers
   with blocking HTTP; `init_controller` sets up the same state without it (deploy/control).
2. The transformers worker: `ModelWorker.__init__` loads the model by path substrings (and forces
   fp16 on Qwen); `init_model_worker` sets up the same state without a model, `attach_model` adds
   the one the entry's own loader loaded and `detach_model` drops it (a model loaded on demand,
   deploy/backends/transformers_worker.py). Its generation, embeddings and token counting stay
   FastChat's (called through super()), as does `BaseModelWorker.__init__`. FastChat's embeddings
   call the tokenizer's `batch_encode_plus`, which transformers 5 removed: `attach_model` gives the
   tokenizer one, the tokenizer's own call (what batch_encode_plus always did for a list of texts).
3. The API server: FastChat's `/v1/models` handler is mounted into our app (deploy/api), and it
   reads the controller's address from FastChat's module-level `app_settings`, which
   `fastchat_models_route` sets instead of parsing sys.argv.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect

UPSTREAM = {
    "fastchat.serve.controller:Controller.__init__":
        "d726656d9584883105a07cc67708b834a46a78a651883c7bb591a8bce94e76ff",
    "fastchat.serve.base_model_worker:BaseModelWorker.__init__":
        "2bf05da90deba655c1428b06be6fc29c0af7c85a6939932577310e9514f78b25",
    "fastchat.serve.model_worker:ModelWorker.__init__":
        "f0c094b91526c43dbc63efb69c4bfae76747dbf9aaf2a8e5b98e41e655c386b3",
    "fastchat.serve.model_worker:ModelWorker.get_embeddings":
        "f9ac3507b50c0273228f29cf53802204509ae395de2ce88ccddf95024c07fce1",
    "fastchat.serve.openai_api_server:AppSettings":
        "e45bc13d0b49c799ce3a2abbb7fbd6b90f5f897b108331bfe5912992b3fd71b6",
    "fastchat.serve.openai_api_server:show_available_models":
        "8ba8ab3779c694641cb58f18c574b95e3f43f05c4ee259f2ad035224aad675be",
}


class UpstreamChanged(RuntimeError):
    pass


def resolve(qualname: str):
    """'package.module:Attr.attr' -> the object."""
    module, _, attrs = qualname.partition(":")
    obj = importlib.import_module(module)
    for part in attrs.split("."):
        obj = getattr(obj, part)
    return obj


def source_sha(qualname: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(qualname)).encode()).hexdigest()


def checked(qualname: str):
    """The upstream object, after checking that its source is what this module was written against."""
    if source_sha(qualname) != UPSTREAM[qualname]:
        raise UpstreamChanged(f"FastChat's {qualname} changed since deploy/fastchat_compat.py was written; "
                              f"re-check what depends on it, then update UPSTREAM.")
    return resolve(qualname)


def check_upstream() -> None:
    """Fail loudly if any FastChat code we bypass or depend on has changed."""
    for qualname in UPSTREAM:
        checked(qualname)


def init_controller(controller) -> None:
    """Controller.__init__'s state (shortest-queue routing, no workers), without its thread."""
    checked("fastchat.serve.controller:Controller.__init__")
    from fastchat.serve.controller import DispatchMethod

    controller.worker_info = {}
    controller.dispatch_method = DispatchMethod.SHORTEST_QUEUE


def init_model_worker(worker, *, controller_addr: str, worker_addr: str, worker_id: str, model_path: str,
                      model_names: list[str], concurrency: int, conv_template: str, context_len: int) -> None:
    """ModelWorker.__init__'s state without a model (attach_model adds one) and without registering
    (our worker app registers with the fleet secret)."""
    checked("fastchat.serve.model_worker:ModelWorker.__init__")
    from fastchat.serve.base_model_worker import BaseModelWorker

    checked("fastchat.serve.base_model_worker:BaseModelWorker.__init__")
    BaseModelWorker.__init__(worker, controller_addr, worker_addr, worker_id, model_path, model_names, concurrency,
                             conv_template=conv_template)
    worker.model_path = model_path
    worker.model = worker.tokenizer = worker.generate_stream_func = None
    worker.device = "cpu"
    worker.context_len = context_len
    worker.stream_interval = 2
    worker.embed_in_truncate = False
    worker.seed = None


def attach_model(worker, model, tokenizer) -> None:
    """The rest of ModelWorker.__init__: the model the caller loaded, and FastChat's generation for it."""
    checked("fastchat.serve.model_worker:ModelWorker.__init__")
    from fastchat.model.model_adapter import get_generate_stream_function

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    checked("fastchat.serve.model_worker:ModelWorker.get_embeddings")
    if not hasattr(tokenizer, "batch_encode_plus"):  # transformers 5: the same call, by its one name
        tokenizer.batch_encode_plus = tokenizer.__call__
    worker.model, worker.tokenizer = model, tokenizer
    worker.generate_stream_func = get_generate_stream_function(model, worker.model_path)


def detach_model(worker) -> None:
    """Drop every reference ModelWorker keeps to its model (the memory is freed once they are gone)."""
    worker.model = worker.tokenizer = worker.generate_stream_func = None


def fastchat_models_route(controller_url: str):
    """FastChat's own GET /v1/models route, reading the controller at `controller_url`."""
    from fastapi.routing import APIRoute
    from fastchat.serve import openai_api_server

    checked("fastchat.serve.openai_api_server:AppSettings")
    handler = checked("fastchat.serve.openai_api_server:show_available_models")
    openai_api_server.app_settings.controller_address = controller_url
    return next(r for r in openai_api_server.app.router.routes
                if isinstance(r, APIRoute) and r.endpoint is handler)
