"""`treadle init --ci github|gitlab`: a CI workflow that tests, builds and deploys a
pipeline with `treadle pipeline` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from treadle.cli import common
from treadle.errors import ConflictError, InvalidInputError

GITHUB = """\
# Pipeline CI/CD with treadle: test and build on every push; deploy the package to
# staging from main, run it there, then promote the same package to prod.
# Secrets: TREADLE_STAGING_URL, TREADLE_STAGING_TOKEN, TREADLE_PROD_URL, TREADLE_PROD_TOKEN.
name: pipeline

on:
  push:
  workflow_dispatch:

env:
  PIPELINE: {pipeline}

jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install {requirement} pytest
      - run: treadle pipeline test "$PIPELINE"
      - run: treadle pipeline build "$PIPELINE" --out dist
      - uses: actions/upload-artifact@v4
        with:
          name: package
          path: dist/*.treadle

  staging:
    if: github.ref == 'refs/heads/main'
    needs: build
    runs-on: ubuntu-latest
    environment: staging
    env:
      TREADLE_ENV_STAGING_URL: ${{{{ secrets.TREADLE_STAGING_URL }}}}
      TREADLE_ENV_STAGING_TOKEN: ${{{{ secrets.TREADLE_STAGING_TOKEN }}}}
    steps:
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install {requirement}
      - uses: actions/download-artifact@v4
        with:
          name: package
          path: dist
      - run: treadle pipeline deploy dist/*.treadle --to staging
      - run: treadle pipeline run {name} --env staging

  prod:
    needs: staging
    runs-on: ubuntu-latest
    environment: prod
    env:
      TREADLE_ENV_STAGING_URL: ${{{{ secrets.TREADLE_STAGING_URL }}}}
      TREADLE_ENV_STAGING_TOKEN: ${{{{ secrets.TREADLE_STAGING_TOKEN }}}}
      TREADLE_ENV_PROD_URL: ${{{{ secrets.TREADLE_PROD_URL }}}}
      TREADLE_ENV_PROD_TOKEN: ${{{{ secrets.TREADLE_PROD_TOKEN }}}}
    steps:
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install {requirement}
      - uses: actions/download-artifact@v4
        with:
          name: package
          path: dist
      # refused unless the same package hash ran green in staging
      - run: treadle pipeline deploy dist/*.treadle --to prod
"""

GITLAB = """\
# Pipeline CI/CD with treadle: test and build on every push; deploy the package to
# staging from the default branch, run it there, then promote the same package to prod
# (a manual job). CI/CD variables: TREADLE_ENV_STAGING_URL, TREADLE_ENV_STAGING_TOKEN,
# TREADLE_ENV_PROD_URL, TREADLE_ENV_PROD_TOKEN (masked).
image: python:3.11

variables:
  PIPELINE: {pipeline}

stages: [test, build, staging, prod]

before_script:
  - pip install {requirement} pytest

test:
  stage: test
  script:
    - treadle pipeline test "$PIPELINE"

build:
  stage: build
  script:
    - treadle pipeline build "$PIPELINE" --out dist
  artifacts:
    paths: [dist/]

staging:
  stage: staging
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
  script:
    - treadle pipeline deploy dist/*.treadle --to staging
    - treadle pipeline run {name} --env staging

prod:
  stage: prod
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
      when: manual
  script:
    # refused unless the same package hash ran green in staging
    - treadle pipeline deploy dist/*.treadle --to prod
"""

WORKFLOWS = {
    "github": (Path(".github/workflows/treadle-pipeline.yml"), GITHUB),
    "gitlab": (Path(".gitlab-ci.yml"), GITLAB),
}


def init(
    ci: Annotated[str, typer.Option("--ci", help="github or gitlab.")],
    pipeline: Annotated[
        str, typer.Option(help="The pipeline file the workflow tests, builds and deploys.")
    ] = "pipeline.py",
    requirement: Annotated[
        str, typer.Option(help="How CI installs treadle (a pip requirement).")
    ] = "treadle",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a CI workflow (GitHub or GitLab) for a pipeline.

    It runs `treadle pipeline test`, `build` and `deploy`: staging from the main branch,
    then prod, which takes only what ran green in staging.

    Example: treadle init --ci github --pipeline training/pipeline.py
    """
    if ci not in WORKFLOWS:
        raise InvalidInputError(f"--ci {ci!r} is not known", "use --ci github or --ci gitlab")
    path, template = WORKFLOWS[ci]
    if path.exists() and not force:
        raise ConflictError(f"{path} exists", "pass --force to overwrite it")
    name = _pipeline_name(pipeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template.format(pipeline=pipeline, requirement=requirement, name=name))
    common.console().print(f"wrote {path}")
    common.console().print(
        "set the staging and prod URLs and tokens as CI secrets (names at the top of the file)"
    )


def _pipeline_name(target: str) -> str:
    """The pipeline's name, read from its file when it can be loaded here."""
    from treadle.engine import find_pipeline

    try:
        return find_pipeline(target)[0].name
    except Exception as exc:  # the workflow can still be written: the name is a guess
        common.err_console().print(
            f"[yellow]note:[/] could not load {target} ({exc}); edit the pipeline name "
            "in the `treadle pipeline run` line"
        )
        return Path(target.partition(":")[0]).stem
