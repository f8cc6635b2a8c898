"""The baseline for text: a handler written the way TorchServe's documentation shows for a transformers
classifier. Subclasses BaseHandler (which loads the TorchScript file), tokenizes each request on its own,
pads every one to the model's maximum length (128), stacks the batch and runs the model; TorchScript FP32.

The docs load a transformers tokenizer; this one loads the same tokenizer.json with ``tokenizers`` (what
transformers' fast tokenizers run underneath). ``handler.threads`` in the archive's model-config.yaml, when
set, goes to ``torch.set_num_threads`` (the bench measures this baseline at each thread count and keeps its
best). Kept as it is on purpose: it is what we measure our handler against, not code to copy.
"""
import json
import os

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from ts.torch_handler.base_handler import BaseHandler

MAX_LENGTH = 128


class TextHandler(BaseHandler):
    def initialize(self, context):
        threads = int(((getattr(context, "model_yaml_config", None) or {}).get("handler") or {}).get("threads", 0))
        if threads:
            torch.set_num_threads(threads)
        super().initialize(context)
        model_dir = context.system_properties.get("model_dir")
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_LENGTH)
        self.tokenizer.enable_padding(length=MAX_LENGTH)

    def preprocess(self, data):
        ids, masks = [], []
        for row in data:
            payload = row.get("data") or row.get("body")
            if isinstance(payload, (bytes, bytearray)):
                payload = json.loads(payload)
            encoding = self.tokenizer.encode(payload["text"])
            ids.append(torch.tensor(encoding.ids))
            masks.append(torch.tensor(encoding.attention_mask))
        return torch.stack(ids).to(self.device), torch.stack(masks).to(self.device)

    def inference(self, data, *args, **kwargs):
        with torch.no_grad():
            return self.model(*data)

    def postprocess(self, data):
        probabilities = F.softmax(data, dim=1)
        top = torch.topk(probabilities, 3, dim=1)
        return [{"class": int(c[0]), "top_k": [[int(i), float(p)] for i, p in zip(c, v)]}
                for c, v in zip(top.indices, top.values)]
