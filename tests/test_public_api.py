"""The public API of ``simclr_cli``: every exported name is importable, typed and documented."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

import simclr_cli
from simclr_cli import _version
from simclr_cli.core import _io

#: The names issue 10 promises to Python users.
PROMISED = (
    "pretrain",
    "load_model",
    "embed",
    "probe",
    "create_backbone",
    "ProjectionHead",
    "nt_xent_loss",
    "Preset",
    "create_view_transform",
    "create_eval_transform",
    "ViewTransform",
    "BatchAugmenter",
)

EXPORTED = [name for name in simclr_cli.__all__ if name != "__version__"]


def own_docstring(obj: object) -> str:
    """The docstring an object defines itself (not inherited, not made up by ``dataclass``)."""
    text = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    text = inspect.cleandoc(text or "")
    generated = f"{obj.__name__}("
    return "" if text.startswith(generated) else text


def documented_parameters(docstring: str) -> set[str]:
    """Names listed in a Google-style ``Args:`` section."""
    if "Args:" not in docstring:
        return set()
    section = docstring.split("Args:", 1)[1]
    section = re.split(r"\n(?:Returns|Raises|Yields|Attributes|Example|Examples|Note):", section)[0]
    return set(re.findall(r"^ {4}(\w+)(?: \(.*?\))?:", section, flags=re.MULTILINE))


def signature_of(obj: object) -> inspect.Signature | None:
    """The signature a user calls: a function's, or a hand-written class ``__init__``'s."""
    if inspect.isfunction(obj):
        return inspect.signature(obj)
    if inspect.isclass(obj) and not dataclasses.is_dataclass(obj) and "__init__" in vars(obj):
        return inspect.signature(obj.__init__)
    return None


def test_all__has_unique_names_and_the_promised_ones():
    assert len(simclr_cli.__all__) == len(set(simclr_cli.__all__))
    missing = [name for name in PROMISED if name not in simclr_cli.__all__]
    assert not missing, f"not exported: {missing}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", simclr_cli.__version__)


@pytest.mark.parametrize("name", EXPORTED)
def test_all__name_is_importable_and_documented(name: str):
    # A fresh ``from simclr_cli import name``, as a user writes it.
    obj = getattr(importlib.import_module("simclr_cli"), name)
    assert inspect.isfunction(obj) or inspect.isclass(obj), f"{name} is not a function or class"
    docstring = own_docstring(obj)
    assert docstring, f"{name} has no docstring of its own"

    signature = signature_of(obj)
    if signature is None:
        return
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    untyped = [p.name for p in parameters if p.annotation is inspect.Parameter.empty]
    assert not untyped, f"{name}: parameters without a type hint: {untyped}"
    if inspect.isfunction(obj):
        assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
    if parameters:
        undocumented = {p.name for p in parameters} - documented_parameters(docstring)
        assert not undocumented, f"{name}: parameters missing from Args: {sorted(undocumented)}"
    if "config" in signature.parameters:
        kind = signature.parameters["config"].kind
        assert kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: config must be keyword-only"


def test_documented_parameters__reads_google_style_args_only():
    docstring = inspect.cleandoc(
        """Summary.

        Args:
            first: One.
            second (int): Two,
                continued: on a second line.

        Returns:
            result: Not a parameter.
        """
    )
    assert documented_parameters(docstring) == {"first", "second"}
    assert documented_parameters("No sections.") == set()


def test_version__one_place_that_pyproject_reads():
    assert simclr_cli.__version__ == _version.__version__
    pyproject = (Path(simclr_cli.__file__).parent.parent / "pyproject.toml").read_text()
    project = _io.loads(pyproject)
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    attribute = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attribute == "simclr_cli._version.__version__"
