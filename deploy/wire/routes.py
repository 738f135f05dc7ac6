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
# worker
WORKER_GET_STATUS = "/worker_get_status"
WORKER_GENERATE_STREAM = "/worker_generate_stream"
WORKER_GENERATE = "/worker_generate"
WORKER_GET_CONV_TEMPLATE = "/worker_get_conv_template"
WORKER_GET_EMBEDDINGS = "/worker_get_embeddings"
COUNT_TOKEN = "/count_token"
MODEL_DETAILS = "/model_details"
FLEET_INFO = "/fleet_info"  # ours: what the worker is (backend, cores, budget, features, ...)

SECRET_HEADER = "X-Fleet-Secret"  # registration and heartbeats carry the fleet secret in it
# Routes that change the controller's routing: they need the fleet secret from every client.
CONTROL_ROUTES = frozenset({REGISTER_WORKER, RECEIVE_HEART_BEAT, REFRESH_ALL_WORKERS})
