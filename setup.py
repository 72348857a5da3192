"""Build of the one compiled module; all other metadata is in pyproject.toml.

facebank.index._screen is the picker's rejection loop in C (see facebank/index/screen.py). It is
optional: where no C compiler is available, installation goes on without it and the picker runs
the same loop in numpy, with the same results, more slowly.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("facebank.index._screen", ["facebank/index/_screen.c"], optional=True,
                             extra_compile_args=["-O3"])])
