"""Hydra instantiates sweepers only from its `hydra_plugins` namespace package: this is bertlab's suite
sweeper there (conf/hydra/sweeper/suite.yaml names it). The code is bertlab.launcher.suite_sweeper, imported
when a suite is launched, so that Hydra's scan of its plugins at every start stays cheap."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class SuiteSweeper(Sweeper):
    """Delegates to bertlab.launcher.suite_sweeper.SuiteSweeper."""

    def __init__(self) -> None:
        from bertlab.launcher.suite_sweeper import SuiteSweeper as Sweep

        self.sweeper = Sweep()

    def setup(self, **kwargs: Any) -> None:
        self.sweeper.setup(**kwargs)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
