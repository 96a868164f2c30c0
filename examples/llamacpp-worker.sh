#!/usr/bin/env bash
# The same worker as llamacpp-worker.yaml, as one command line.
HEAD=${HEAD:?set HEAD=/ip4/<head-ip>/tcp/43905/p2p/<head-peer-id>}
GGUF=${GGUF:?set GGUF=/path/to/model.gguf}
exec opentela-node start --home ~/.otela/llamacpp-worker --http-port 8095 --p2p-port 43908 \
  --bootstrap "$HEAD" --service.name llm --service.port 8081 \
  --subprocess "python -m llama_cpp.server --model $GGUF --model_alias $(basename "$GGUF" .gguf) --host 127.0.0.1 --port 8081 --n_ctx 4096 --interrupt_requests False"
