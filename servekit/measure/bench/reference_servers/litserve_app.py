"""What a user would pick instead of TorchServe: LitServe 0.2.19 serving the same ONNX model as ours, the way
its docs show (a LitAPI with setup, decode_request, batch, predict, unbatch, encode_response), ONNX Runtime on
the same threads, batching by max_batch_size / batch_timeout, the same preprocessing (PIL resize 256, crop
224, ImageNet normalisation; or the same tokenizer.json, padded to the batch's longest).

Runs in a venv of its own (`make litserve-venv`); servekit never imports it. Images come as base64 in JSON
(``{"image": "..."}``), LitServe's documented way; text as ``{"text": "..."}``, the same bodies as ours.

    python litserve_app.py --model model.onnx --kind images --port 8000 --threads 2 --batch 16 --timeout-ms 10
"""
import argparse
import io

import litserve as ls
import numpy as np
import onnxruntime as ort


class OnnxAPI(ls.LitAPI):
    def __init__(self, args):
        super().__init__(max_batch_size=args.batch, batch_timeout=args.timeout_ms / 1000.0)
        self.args = args

    def setup(self, device):
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.args.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.args.model, options, providers=["CPUExecutionProvider"])
        if self.args.kind == "text":
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(self.args.tokenizer)
            self.tokenizer.enable_truncation(self.args.max_length)
            self.tokenizer.enable_padding()

    def decode_request(self, request):
        if self.args.kind == "text":
            return request["text"]
        from PIL import Image

        image = Image.open(io.BytesIO(_body(request))).convert("RGB")
        width, height = image.size
        scale = 256 / min(width, height)
        image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
        left, top = (image.size[0] - 224) // 2, (image.size[1] - 224) // 2
        pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
        return ((pixels - MEAN) / STD).transpose(2, 0, 1)

    def batch(self, inputs):
        if self.args.kind == "text":
            encodings = self.tokenizer.encode_batch(list(inputs))
            return {"input_ids": np.array([e.ids for e in encodings], np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], np.int64)}
        return {"image": np.stack(inputs).astype(np.float32)}

    def predict(self, x):
        logits = self.session.run(None, x)[0]
        exp = np.exp(logits - logits.max(1, keepdims=True))
        return exp / exp.sum(1, keepdims=True)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, probabilities):
        top = np.argsort(-probabilities)[:3]
        return {"class": int(top[0]), "top_k": [[int(i), float(probabilities[i])] for i in top]}


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _body(request):
    import base64

    return base64.b64decode(request["image"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--kind", choices=("images", "text"), required=True)
    parser.add_argument("--tokenizer")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--timeout-ms", type=float, default=10.0)
    args = parser.parse_args()
    server = ls.LitServer(OnnxAPI(args), accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)


if __name__ == "__main__":
    main()
