"""The OpenAI-compatible API server: our routers (one module per resource: chat, completions,
embeddings, tokens) listed in one route table (routes), mounted by one factory (app) with FastChat's
own /v1/models, behind the request gate (gate: keys, bounded bodies, strict JSON, the in-flight
cap, metrics); request models that validate themselves (protocol); the fleet as the API sees it
(workers); server-sent events (streaming).

May import: deploy.backends, deploy.wire, deploy.registry, deploy.fastchat_compat.
"""
