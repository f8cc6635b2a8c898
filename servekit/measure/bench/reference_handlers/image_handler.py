"""The baseline for images: a handler written the way TorchServe's documentation shows for an image
classifier. Subclasses BaseHandler (which loads the TorchScript file), opens each body with PIL,
resizes, crops, turns it into a tensor, normalises it, and stacks the batch; TorchScript FP32.

torchvision's Resize(256)/CenterCrop(224)/ToTensor()/Normalize() are written out with PIL and torch
because the registry's torchvision does not load with our torch. ``handler.threads`` in the archive's
model-config.yaml, when set, goes to ``torch.set_num_threads`` (the bench measures this baseline at each
thread count and keeps its best: torch's default of every core served 0.4x of one thread on 2 shared cores).
Kept as it is on purpose: it is what we measure our handler against, not code to copy.
"""
import io

import torch
import torch.nn.functional as F
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class ImageHandler(BaseHandler):
    def initialize(self, context):
        threads = int(((getattr(context, "model_yaml_config", None) or {}).get("handler") or {}).get("threads", 0))
        if threads:
            torch.set_num_threads(threads)
        super().initialize(context)

    def preprocess(self, data):
        images = []
        for row in data:
            image = row.get("data") or row.get("body")
            image = Image.open(io.BytesIO(image)).convert("RGB")
            width, height = image.size
            scale = 256 / min(width, height)
            image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
            left, top = (image.size[0] - 224) // 2, (image.size[1] - 224) // 2
            image = image.crop((left, top, left + 224, top + 224))
            tensor = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(224, 224, 3)
            tensor = tensor.permute(2, 0, 1).float() / 255.0
            images.append((tensor - MEAN) / STD)
        return torch.stack(images).to(self.device)

    def postprocess(self, data):
        probabilities = F.softmax(data, dim=1)
        top = torch.topk(probabilities, 3, dim=1)
        return [{"class": int(c[0]), "top_k": [[int(i), float(p)] for i, p in zip(c, v)]}
                for c, v in zip(top.indices, top.values)]
