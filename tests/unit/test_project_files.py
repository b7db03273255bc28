"""Tests of cortado.project.files: which files a bundle holds, and the handler check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortado.project.config import parse_config
from cortado.project.errors import ProjectError
from cortado.project.files import check_project_files, collect_files
from tests.unit.projectsamples import MINIMAL, make_tree, write


def test_collect_files_applies_the_dot_pycache_config_and_cortexignore_rules(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert collect_files(tmp_path, "cortex.yaml") == [
        (".env", 1),
        ("datafile", 1),
        ("handler.py", 1),
        ("keep.log", 1),
        ("logs/keep.log", 1),
        ("pkg/__init__.py", 1),
        ("pkg/cortex.yaml", 1),
        ("requirements.txt", 1),
        ("src/build/kept.py", 1),
    ]


def test_collect_files_follows_links_inside_the_project_and_skips_those_outside(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "handler.py", "print()")
    write(project / "models/model.bin", "12345")
    write(tmp_path / "outside.txt", "secret")
    write(tmp_path / "outside_dir/file.txt", "secret")
    os.symlink(project / "models/model.bin", project / "model-link.bin")
    os.symlink(project / "models", project / "models-link")
    os.symlink(tmp_path / "outside.txt", project / "outside-link.txt")
    os.symlink(tmp_path / "outside_dir", project / "outside-dir-link")
    os.symlink(project / "missing", project / "broken-link")
    os.symlink(project, project / "models/loop")  # a loop back up the tree is not followed
    assert collect_files(project, "cortado.yaml") == [
        ("handler.py", 7),
        ("model-link.bin", 5),
        ("models-link/model.bin", 5),
        ("models/model.bin", 5),
    ]


def test_check_project_files_reports_a_missing_handler(tmp_path: Path) -> None:
    write(tmp_path / "other.py")
    parsed = parse_config(MINIMAL, "cortado.yaml")
    with pytest.raises(ProjectError) as caught:
        check_project_files(parsed, collect_files(tmp_path, "cortado.yaml"), "cortado.yaml")
    assert str(caught.value).startswith("cortado.yaml: api 'echo': handler.path 'handler.py' is not in the project")
    write(tmp_path / "handler.py")
    check_project_files(parsed, collect_files(tmp_path, "cortado.yaml"), "cortado.yaml")
