#!/usr/bin/env bash
# The same worker as vllm-worker.yaml, as one command line.
HEAD=${HEAD:?set HEAD=/ip4/<head-ip>/tcp/43905/p2p/<head-peer-id>}
exec opentela-node start --home ~/.otela/vllm-worker --http-port 8093 --p2p-port 43906 \
  --bootstrap "$HEAD" --service.name llm --service.port 8080 --drain-timeout 120 \
  --subprocess "vllm serve Qwen/Qwen2.5-7B-Instruct --port 8080 --max-model-len 8192"
