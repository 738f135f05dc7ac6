"""The vllm backend, for GPU hosts: FastChat's own vLLM worker, registered with the same controller."""
from __future__ import annotations

import os
import sys

from deploy.backends.transformers import HFFolderBackend


class Vllm(HFFolderBackend):
    name = "vllm"
    summary = "Hugging Face folders on a GPU host, FastChat's vLLM worker"
    runtime_overhead = 2 * 1024**3
    address_space_headroom = 16 * 1024**3

    def host_warnings(self, entry) -> list[str]:
        return ["backend 'vllm' needs a GPU host with vllm installed; it will not start here. FastChat's vLLM "
                "worker registers without the fleet secret, so this project's controller refuses it (401) until "
                "it is served through deploy/worker/app.py like the other backends."]

    def build_worker(self, entry, controller_url: str, worker_url: str):
        """Replaces this (already pinned and limited) process with FastChat's vLLM worker."""
        from urllib.parse import urlsplit

        host = urlsplit(worker_url).hostname
        args = [sys.executable, "-m", "fastchat.serve.vllm_worker",
                "--model-path", str(entry.resolved_path), "--model-names", entry.model_name,
                "--controller-address", controller_url, "--worker-address", worker_url,
                "--host", host, "--port", str(entry.port),
                "--conv-template", entry.chat_template,
                "--limit-worker-concurrency", str(entry.concurrency)]
        if entry.trust_remote_code:
            args.append("--trust-remote-code")
        os.execv(sys.executable, args)
