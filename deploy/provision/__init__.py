"""Getting models onto the machine: the offline default models assembled from PyPI wheels
(default_models), downloads from ModelScope (modelscope), and conversions run in throwaway
environments (gguf_to_hf).

May import: deploy.registry, deploy.backends, deploy.worker.fit (budgets from the estimate).
"""
