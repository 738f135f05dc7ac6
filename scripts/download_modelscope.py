#!/usr/bin/env python3
"""Download a model from ModelScope and add it to model_paths.toml: a thin wrapper of
`python -m deploy download` (same options; see its --help).

    .venv/bin/python scripts/download_modelscope.py qwen/Qwen-7B-Chat
    .venv/bin/python scripts/download_modelscope.py ZhipuAI/chatglm3-6b --cores 0-1
"""
import sys

from deploy.ops.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
