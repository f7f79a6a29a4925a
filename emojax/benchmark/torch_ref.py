"""The PyTorch references the benchmarks time emojax against (transformers, eager attention).

`TorchBaseline` is how steering libraries steer a Hugging Face model: a forward-pre-hook on
one decoder layer that adds the vector, one forward (or one `generate` call) per condition.
`transformers_gguf_model` builds transformers' own model from a GGUF file. torch and
transformers are imported on first use only.

Dimension letters: C conditions, N prompts, T prompt tokens, W generated tokens, D model.
"""

from __future__ import annotations

import numpy as np


class TorchBaseline:
    """transformers LlamaForCausalLM + a forward-pre-hook that adds the steering vector."""

    def __init__(self, path, layer, dtype, device="cpu"):
        """Loads the checkpoint at `path` and hooks decoder layer `layer`.

        Args:
          path: a Hugging Face checkpoint directory (e.g. written by `emojax.save_pretrained`).
          layer: the decoder layer whose input the vector is added to.
          dtype: the torch dtype of the weights and activations.
          device: the torch device.
        """
        import torch
        from transformers import LlamaForCausalLM

        self.torch = torch
        self.device = device
        self.model = LlamaForCausalLM.from_pretrained(path).eval().to(device=device, dtype=dtype)
        self.layer = layer
        self.vector = None

        def hook(module, args, kwargs):
            if self.vector is None:
                return None
            if args:
                return (args[0] + self.vector,) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = kwargs["hidden_states"] + self.vector
            return args, kwargs

        self.model.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)

    def set_vector(self, v):
        """Sets the [D] vector the hook adds (None: no steering)."""
        if v is not None:
            v = self.torch.as_tensor(np.asarray(v)).to(device=self.device, dtype=self.model.dtype)
        self.vector = v

    def refusal_scores(self, tokens, mask, steer, refusal_ids, batch) -> np.ndarray:
        """[C, N] refusal scores: one forward per condition and prompt batch.

        Args:
          tokens: int [N, T] left-padded prompts.
          mask: int [N, T] attention mask.
          steer: [C, D] steering vectors, one per condition.
          refusal_ids: the refusal-start token ids.
          batch: prompts per forward.
        """
        torch = self.torch
        tk, mk = self._tensor(tokens), self._tensor(mask)
        pos = torch.clamp(mk.cumsum(-1) - 1, min=0)
        ids = self._tensor(refusal_ids)

        def scores(i: int) -> np.ndarray:
            logits = (
                self.model(
                    input_ids=tk[i : i + batch],
                    attention_mask=mk[i : i + batch],
                    position_ids=pos[i : i + batch],
                )
                .logits[:, -1]
                .float()
            )
            lse_r = torch.logsumexp(logits[:, ids], -1)
            rest = logits.clone()
            rest[:, ids] = -torch.inf
            return (lse_r - torch.logsumexp(rest, -1)).cpu().numpy()

        return self._per_condition(steer, tk.shape[0], batch, scores)

    def generate(self, tokens, mask, steer, new_tokens, batch) -> np.ndarray:
        """[C, N, W] greedy tokens: HF generate with the hook, per condition and batch.

        Args:
          tokens: int [N, T] left-padded prompts.
          mask: int [N, T] attention mask.
          steer: [C, D] steering vectors, one per condition.
          new_tokens: W, generated tokens per response (never stopping early).
          batch: prompts per `generate` call.
        """
        tk, mk = self._tensor(tokens), self._tensor(mask)

        def greedy(i: int) -> np.ndarray:
            g = self.model.generate(
                input_ids=tk[i : i + batch],
                attention_mask=mk[i : i + batch],
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
            return g[:, tk.shape[1] :].cpu().numpy()

        return self._per_condition(steer, tk.shape[0], batch, greedy)

    def _tensor(self, x):
        """An int64 tensor on the model's device."""
        return self.torch.as_tensor(x).long().to(self.device)

    def _per_condition(self, steer, n: int, batch: int, rows_from) -> np.ndarray:
        """[C, N, ...]: `rows_from(i)` for prompts i..i+batch under each steering vector."""
        out = []
        with self.torch.inference_mode():
            for v in steer:
                self.set_vector(v)
                out.append(np.concatenate([rows_from(i) for i in range(0, n, batch)]))
        self.set_vector(None)
        return np.stack(out)


def transformers_gguf_model(path: str):
    """transformers' model of a GGUF file, float32 eager attention, in eval mode.

    Built by transformers' own GGUF reader without `from_pretrained` (which needs accelerate).

    Args:
      path: a .gguf file.

    Raises:
      ValueError: the reader gave tensors the model does not have, or left any out (a tied
        output head aside).
    """
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    config = transformers.AutoConfig.for_model(**load_gguf_checkpoint(path)["config"])
    with no_init_weights():
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32
        )
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(
            f"transformers' GGUF reader gave {path} with missing tensors {sorted(missing)} and "
            f"unexpected ones {sorted(unexpected)}"
        )
    if missing:  # a tied head
        model.tie_weights()
    return model.eval()
