"""emojax: stability, modularity and break points of functional emotion vectors, in JAX.

The public core (see README.md):

    model = emojax.load_model("path/to/hf_checkpoint")
    out = emojax.forward(model.params, model.config, tokens)        # out.logits, out.resid
    h = out.resid_at(4)                                              # resid entering layer 4
    iv = emojax.Intervention.add(model.config, layer=4, vector=v, coef=8.0)
    out = emojax.forward(model.params, model.config, tokens, intervention=iv)
    new = emojax.generate(model.params, model.config, tokens, max_new_tokens=16)
"""

from emojax.config import ConfigError, ModelConfig
from emojax.generate import checked_generate, generate
from emojax.gguf import GGUFError
from emojax.interventions import Intervention
from emojax.loading import CheckpointError, Model, load_model, save_pretrained
from emojax.model import Output, checked_forward, forward, loss_fn
from emojax.params import LayerParams, Norm, Params, abstract_params, init_params

__all__ = [
    "CheckpointError",
    "ConfigError",
    "GGUFError",
    "Intervention",
    "LayerParams",
    "Model",
    "ModelConfig",
    "Norm",
    "Output",
    "Params",
    "abstract_params",
    "checked_forward",
    "checked_generate",
    "forward",
    "generate",
    "init_params",
    "load_model",
    "loss_fn",
    "save_pretrained",
]
