"""What crosses the wire between the fleet's processes, shared by every layer above the registry:
FastChat's controller and worker protocol (routes, NUL-framed streams, generation parameters and
their ranges, conversations), the one fleet client, errors in OpenAI's shape, strict JSON,
bounded request bodies, who may call a service, the fleet secret and the API keys files.

May import: deploy.registry (chat templates), deploy.fastchat_compat.
"""
