"""The baseline: a handler written the way TorchServe's documentation shows.

Subclasses BaseHandler (which loads the TorchScript file and runs ``self.model(data)``), turns each
JSON ``{"data": [...]}`` into a tensor and stacks them. Kept as it is on purpose: it is what we
measure our handler against, not code to copy.
"""
import json

import torch
import torch.nn.functional as F
from ts.torch_handler.base_handler import BaseHandler


class PlainHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            payload = row.get("data") or row.get("body")
            if isinstance(payload, (bytes, bytearray)):
                payload = json.loads(payload)
            rows.append(torch.tensor(payload["data"], dtype=torch.float32))
        return torch.stack(rows).to(self.device)

    def postprocess(self, data):
        probabilities = F.softmax(data, dim=1)
        return [{"class": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities]
