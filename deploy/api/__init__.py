"""The API server: our routers (one module per resource: chat, completions, embeddings, the
Responses API, Anthropic's Messages API, rerank, tokens) listed in one route table (routes), mounted
by one factory (app) with FastChat's own /v1/models, behind the Host check and the request gate
(gate: keys, bounded bodies, strict JSON, the in-flight cap, metrics, each route's error shape);
request models that validate themselves (protocol, and beside their routes); the fleet as the API
sees it (workers); server-sent events (streaming).

May import: deploy.backends, deploy.wire, deploy.registry, deploy.fastchat_compat.
"""
