"""The networks sora runs: a folder per model family (`wan/`), and the text and image encoders they share.

A Diffusers-layout `model_index.json` names each component's class; `family` gives the config and network classes
sora builds for it. A new family is a folder here and its rows in `FAMILIES`; the pipeline, the sampler and the
editing features do not change.
"""

from __future__ import annotations

import importlib

# The class model_index.json names -> (its module under models/, the config class, the network class).
FAMILIES = {
    "WanTransformer3DModel": ("wan.transformer", "TransformerConfig", "WanTransformer"),
    "AutoencoderKLWan": ("wan.vae", "VAEConfig", "WanVAE"),
}


def family(index: dict, component: str) -> tuple[type, type]:
    """(config class, network class) of the class `model_index.json` names for `component`; ValueError naming it
    when sora does not run that class."""
    entry = index.get(component) or [None, None]
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if name not in FAMILIES:
        raise ValueError(f"its {component} is a {name}, which sora does not run (it runs {', '.join(FAMILIES)})")
    module, config, network = FAMILIES[name]
    loaded = importlib.import_module(f"{__name__}.{module}")
    return getattr(loaded, config), getattr(loaded, network)
