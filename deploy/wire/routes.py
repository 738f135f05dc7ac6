"""FastChat's controller and worker routes, spelled once: the controller and the worker app serve
them by these names, the fleet client calls them."""
from __future__ import annotations

# controller
LIST_MODELS = "/list_models"
GET_WORKER_ADDRESS = "/get_worker_address"
REFRESH_ALL_WORKERS = "/refresh_all_workers"
REGISTER_WORKER = "/register_worker"
RECEIVE_HEART_BEAT = "/receive_heart_beat"
LIST_MULTIMODAL_MODELS = "/list_multimodal_models"
LIST_LANGUAGE_MODELS = "/list_language_models"
TEST_CONNECTION = "/test_connection"
FLEET_WORKERS = "/fleet_workers"  # ours: every worker with its health, queue and last heartbeat
FLEET_POOLS = "/fleet_pools"      # ours: every host's memory pool, its limit, use and members
POOL_ACQUIRE = "/pool/acquire"    # ours: a worker asks for its budget before it loads
POOL_LOADED = "/pool/loaded"      # ...says how the load went
POOL_RELEASED = "/pool/released"  # ...says it unloaded by itself (idle_unload, or asked to)
POOL_PIN = "/pool/pin"            # ...says it is pinned (never unloaded to make room) or no longer
# worker
WORKER_GET_STATUS = "/worker_get_status"
WORKER_GENERATE_STREAM = "/worker_generate_stream"
WORKER_GENERATE = "/worker_generate"
WORKER_GET_CONV_TEMPLATE = "/worker_get_conv_template"
WORKER_GET_EMBEDDINGS = "/worker_get_embeddings"
COUNT_TOKEN = "/count_token"
WORKER_TOKENIZE = "/worker_tokenize"  # ours: the ids the model is fed for a prompt
WORKER_RENDER = "/worker_render"  # ours: the prompt of the model's own template (chat_template = "auto")
MODEL_DETAILS = "/model_details"
FLEET_INFO = "/fleet_info"  # ours: what the worker is (backend, cores, budget, features, state, ...)
WORKER_UNLOAD = "/fleet_unload"  # ours: the pool asks an idle worker to unload (with the fleet secret)
WORKER_LOAD = "/fleet_load"      # ours: load now, if the pool has room (a user asked: /models/load)
WORKER_RELEASE = "/fleet_release"  # ours: unload now, unless answering (a user asked: /models/unload)
WORKER_PIN = "/fleet_pin"        # ours: pinned or not (a user asked: /models/pin, /models/unpin)

SECRET_HEADER = "X-Fleet-Secret"  # registration and heartbeats carry the fleet secret in it
# Routes that change the controller's routing: they need the fleet secret from every client.
CONTROL_ROUTES = frozenset({REGISTER_WORKER, RECEIVE_HEART_BEAT, REFRESH_ALL_WORKERS, POOL_ACQUIRE, POOL_LOADED,
                            POOL_RELEASED, POOL_PIN})
