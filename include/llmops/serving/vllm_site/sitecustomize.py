"""Put on PYTHONPATH of local vLLM processes (and their engine subprocesses) by llmops.serving.local.

The serving environment must not contain torchvision/torchaudio/torchcodec (requirements/serving-excludes.txt):
their CUDA builds break `import vllm` on CPU torch ("operator torchvision::nms does not exist"). Where an
environment still has them, marking them unimportable here keeps vLLM's text-only path working, since
transformers then sees them as absent.
"""

import importlib.util
import sys

for _name in ("torchvision", "torchaudio", "torchcodec"):
    if _name not in sys.modules and importlib.util.find_spec(_name) is not None:
        sys.modules[_name] = None  # type: ignore[assignment]
