"""The API side: FastChat's OpenAI-compatible API server behind our request gate (gate.py, with
validate.py, errors.py and keys.py), run with our compatibility shims (fastchat_compat, the only
module that patches FastChat).

May import: deploy.registry, deploy.fleet_client, deploy.bounded_body.
"""
