"""The API side: FastChat's OpenAI-compatible API server, run with our compatibility shims
(fastchat_compat, the only module that patches FastChat).

May import: deploy.registry, deploy.fleet_client.
"""
