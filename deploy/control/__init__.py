"""The control plane: FastChat's controller behind the fleet secret, with validated registration,
non-blocking and health-checked routing (controller), and the secret itself (secret).

May import: deploy.registry, deploy.fleet_client, deploy.bounded_body, deploy.access.
"""
