"""Entry point: compose the config with Hydra and run it in its experiment folder.

python launch.py +experiment=pretrain [overrides]      one run  -> runs/pretraining/<name>/
python launch.py -m +experiment=pretrain a=1,2          a sweep  -> runs/pretraining/sweeps/...
python launch.py +experiment=pretrain --cfg job         print the composed config
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bertlab.config.schema import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from bertlab.run import run  # imported here so that --help and --cfg stay fast

    hydra_cfg = HydraConfig.get()
    sweep = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    return run(cfg, Path(hydra_cfg.runtime.output_dir), sweep)


if __name__ == "__main__":
    main()
