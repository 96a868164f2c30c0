#!/usr/bin/env bash
# The same worker as sglang-worker.yaml, as one command line.
HEAD=${HEAD:?set HEAD=/ip4/<head-ip>/tcp/43905/p2p/<head-peer-id>}
exec opentela-node start --home ~/.otela/sglang-worker --http-port 8094 --p2p-port 43907 \
  --bootstrap "$HEAD" --service.name llm --service.port 30000 --drain-timeout 120 \
  --subprocess "python -m sglang.launch_server --model-path meta-llama/Llama-3.1-8B-Instruct --host 127.0.0.1 --port 30000"
