"""A real llama.cpp server (xllamacpp's, the llama.cpp server code in-process) as an upstream for
the `openai` backend's tests: `python tests/llama_upstream.py GGUF PORT ALIAS [KEY [HOST]]`. It serves
llama.cpp's OpenAI-compatible routes on HOST (default 127.0.0.1) until it is stopped, and prints `READY <url>`
(xllamacpp chooses the port when PORT is 0)."""
import sys
import time

import xllamacpp


def main() -> None:
    path, port, alias = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    p = xllamacpp.CommonParams()
    p.model.path, p.model_alias = path, {alias}
    p.hostnames, p.port = [sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1"], port
    p.n_ctx, p.n_parallel = 4096, 2
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
    p.embedding = True
    p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    if len(sys.argv) > 4:
        p.api_keys = [sys.argv[4]]
    server = xllamacpp.Server(p)
    print(f"READY {server.listening_address}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
