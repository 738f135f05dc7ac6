#!/usr/bin/env python3
"""Download a model from ModelScope and add it to model_paths.toml.

    .venv/bin/python scripts/download_modelscope.py qwen/Qwen-7B-Chat
    .venv/bin/python scripts/download_modelscope.py ZhipuAI/chatglm3-6b --cores 0-1
    .venv/bin/python scripts/download_modelscope.py some/model --from-folder /mnt/data/model --chat-template qwen2.5
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy.modelscope_download import main  # noqa: E402

sys.exit(main())
