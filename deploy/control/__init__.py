"""The control plane: FastChat's controller behind the fleet secret, with validated registration,
non-blocking and health-checked routing (controller), run at the registry's address (server).

May import: deploy.backends, deploy.wire, deploy.registry.
"""
