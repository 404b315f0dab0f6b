"""Turning a config section into objects, with errors that name the section's keys.

Every place that builds from the composed config (the run kinds, preparation, export, evaluate) goes through
`instantiate_section` / `instantiate_node`, so a bad value anywhere fails with the same kind of message:
`architecture.num_heads: ...`. `plain_config` turns a node into plain containers for checkpoints, W&B and
the run-info file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bertlab.errors import BertlabError


def instantiate_section(cfg: DictConfig, section: str, **runtime: Any) -> Any:
    """`instantiate` the section `section` (a dotted path) of `cfg`; `runtime` overrides its keys."""
    return instantiate_node(OmegaConf.select(cfg, section), section, **runtime)


def instantiate_node(node: Any, section: str, **runtime: Any) -> Any:
    """`instantiate` a node (or plain dict) that stands for config section `section`."""
    try:
        return instantiate(node, **runtime)
    except InstantiationException as error:
        if isinstance(error.__cause__, BertlabError):
            nested = str(error).rpartition("\nfull_key: ")[2] if "\nfull_key: " in str(error) else ""
            if nested == section or nested.startswith(f"{section}."):  # a node selected from the tree
                nested = nested[len(section) :].lstrip(".")
            raise error.__cause__.in_section(f"{section}.{nested}" if nested else section) from None
        raise BertlabError(str(error), key=section) from error
    except BertlabError as error:
        raise error.in_section(section) from None


def plain_config(node: Any) -> Any:
    """A config node as plain, resolved containers; plain values pass through unchanged."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def edited_config(cfg: DictConfig, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> DictConfig:
    """A new config: `edit` applied to `cfg`'s unresolved tree, so interpolations resolve against the edited
    values (`mlm_head.module.layer_norm_eps: ${architecture.layer_norm_eps}` follows an imported
    architecture). `cfg` itself is left as composed."""
    edited = OmegaConf.create(edit(OmegaConf.to_container(cfg, resolve=False)))
    OmegaConf.set_struct(edited, True)
    return edited
