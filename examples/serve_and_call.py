"""Serve a RAG pipeline behind the OpenAI API with `rag serve`, then call it with `openai`.

    python examples/serve_and_call.py
    RAG_EXAMPLE_DOCS=400 python examples/serve_and_call.py

The server config this writes (serve.yaml) looks like:

    pipelines: {rag: rag.yaml}                 # a pipeline saved with Pipeline.save
    models: {tiny: {type: vllm, model: tiny}}
    embeddings: {minilm: {type: sentence_transformers}}

and the same server answers curl:

    curl http://127.0.0.1:PORT/v1/chat/completions -H 'content-type: application/json' \\
      -d '{"model": "rag", "messages": [{"role": "user", "content": "Who painted the Mona Lisa?"}]}'
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import yaml

from rag.corpus import vital_articles
from rag.recipes import index_corpus, naive_rag



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(1)
    raise SystemExit("the server did not come up")


def main() -> None:
    docs = vital_articles()[: int(os.environ.get("RAG_EXAMPLE_DOCS", "2000"))]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        naive_rag(index_corpus(docs, root / "index"), {"type": "vllm", "model": "tiny"}).save(root / "rag.yaml")
        (root / "serve.yaml").write_text(yaml.safe_dump({
            "pipelines": {"rag": "rag.yaml"}, "models": {"tiny": {"type": "vllm", "model": "tiny"}},
            "embeddings": {"minilm": {"type": "sentence_transformers"}}}))
        rag = Path(sys.executable).with_name("rag")
        port = free_port()
        server = subprocess.Popen([str(rag), "serve", str(root / "serve.yaml"), "--port", str(port)])
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url, server)
            client = openai.OpenAI(base_url=url + "/v1", api_key="none")
            print("models:", [m.id for m in client.models.list()])
            reply = client.chat.completions.create(
                model="rag", messages=[{"role": "user", "content": "Who painted the Mona Lisa?"}])
            print("answer:", reply.choices[0].message.content)
            print("sources:", [s["title"] for s in reply.model_extra["rag"]["sources"]])
            print("streamed:", end=" ", flush=True)
            for chunk in client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "Name three colours."}],
                    max_tokens=32, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
            print()
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
