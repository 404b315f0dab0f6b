"""`training.scheduler=wsd` means `training/scheduler=wsd`: a dotted override naming an option of a nested
config group is rewritten to the group syntax before Hydra reads the command line.

Hydra reads `a.b=name` as a value for key `a.b`, which would replace the group's whole node with a string.
Users write the dotted form for every other key, so it is accepted where it can only mean the group
(every comma-separated choice is an option file of that group); anything else is left to Hydra.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

DOTTED_CHOICE = re.compile(r"^(?P<key>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)=(?P<value>[\w,.-]+)$")


def as_group_overrides(arguments: Sequence[str], config_dir: Path) -> list[str]:
    """`arguments` with each `group.subgroup=option[,option...]` whose options exist as files of the
    nested group `config_dir/group/subgroup/` written as `group/subgroup=option[,...]`."""
    rewritten = []
    for argument in arguments:
        match = DOTTED_CHOICE.match(argument)
        if match:
            group = config_dir.joinpath(*match["key"].split("."))
            choices = match["value"].split(",")
            if group.is_dir() and all((group / f"{choice}.yaml").is_file() for choice in choices):
                argument = f"{match['key'].replace('.', '/')}={match['value']}"
        rewritten.append(argument)
    return rewritten
