"""Entry point: compose the config with Hydra and run it in its experiment folder.

python launch.py +experiment=pretrain [overrides]      one run  -> runs/pretraining/<name>/
python launch.py -m +experiment=pretrain a=1,2          a sweep  -> runs/pretraining/sweeps/...
python launch.py +experiment=pretrain --cfg job         print the composed config
python launch.py -m +experiment=suite suite=smoke       a suite: tasks x seeds x starts -> runs/suites/smoke/

Exit status: 0 done; 2 bad input (one `Error:` line, nothing written); 75 stopped by a signal after saving
checkpoints/model.ckpt (relaunch the same command with training.resume.is_resume=auto to continue).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bertlab.errors import BertlabError
from bertlab.launcher.group_overrides import as_group_overrides
from bertlab.launcher.hydra_errors import report_in_one_line, run_started
from bertlab.launcher.registration import register
from bertlab.launcher.run_folder_guard import (
    end_completed_launch,
    release_launch,
    undo_launch,
    undo_refused_sweep,
)

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_started()
    from bertlab.run import run  # imported here so that --help and --cfg stay fast
    from bertlab.training.interruption import INTERRUPTED_EXIT_STATUS, TrainingInterrupted

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a failed job is recorded in the sweep summary; the rest go on
        return run(cfg, run_dir, Path(hydra_cfg.sweep.dir).name)
    try:
        best = run(cfg, run_dir)
        if end_completed_launch(run_dir):
            print(f"Run {str(run_dir)!r} already completed; nothing to do", file=sys.stderr)
        return best
    except BertlabError as error:  # input the user can fix: one line naming the key, nothing left behind
        undo_launch(run_dir)
        print(f"Error: {error}", file=sys.stderr)
        status = 2
    except PermissionError as error:
        print(f"Error: {error.filename!r}: permission denied ({error.strerror})", file=sys.stderr)
        status = 2
    except TrainingInterrupted as stop:
        print(
            f"Interrupted: {stop}. Continue with the same command and training.resume.is_resume=auto",
            file=sys.stderr,
        )
        status = INTERRUPTED_EXIT_STATUS
    finally:
        release_launch(run_dir)
    sys.exit(status)


if __name__ == "__main__":
    sys.argv[1:] = as_group_overrides(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    report_in_one_line(main, undo=undo_refused_sweep)
