"""Install palm: `pip install -e ".[cpu]"` (CPU), or Paddle's CUDA wheel from Paddle's own
index first and then `pip install -e .` (see the README's GPU paragraph)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

# read, not imported: importing palm would need its dependencies installed already
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (Path(__file__).parent / "palm" / "version.py").read_text(encoding="utf-8"),
                    re.MULTILINE).group(1)

setup(
    name="palm",
    version=VERSION,
    description="PaddlePaddle fundus-photo classification: pathologic myopia screening on PALM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["palm", "palm.*"]),
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pandas",
        "scikit-learn",
        "scipy",
        "matplotlib",
        "PyYAML",
        "tqdm",
        "openpyxl",
        # PyTorch checkpoints without PyTorch: .safetensors files, and bfloat16 for numpy
        "safetensors",
        "ml_dtypes",
    ],
    extras_require={
        "cpu": ["paddlepaddle>=3.0"],
        # tests/serve/test_app.py drives Debian's /usr/bin/chromium through Playwright's Python API;
        # tests/test_sweep.py runs trials on a local Ray instance; tests/test_quantize.py
        # quantizes with NNCF and runs OpenVINO
        # tests/test_packaging.py builds a wheel without build isolation: setuptools >= 70.1
        # builds wheels by itself (a new venv's setuptools 65 needs the wheel package)
        # tests/experiments/test_cv_tasks.py splits multi-label folds by iterative stratification
        "test": ["pytest", "pytest-xdist", "setuptools>=70.1", "fastapi", "uvicorn", "python-multipart", "httpx",
                 "playwright", "ray>=2", "paddle2onnx", "openvino", "nncf", "iterative-stratification"],
        "serve": ["fastapi", "uvicorn", "python-multipart", "httpx"],  # palm serve
        "ray": ["ray>=2"],  # palm sweep / palm cv --backend ray
        # palm cv of a multi-label task: folds by iterative stratification (Sechidis et al. 2011)
        "multilabel": ["iterative-stratification"],
        # palm quantize: paddle2onnx converts, NNCF quantizes, OpenVINO runs the INT8 model
        "int8": ["paddle2onnx", "openvino", "nncf"],
        "log": ["visualdl"],
        "bench": ["paddle2onnx", "onnxruntime"],  # the ONNX Runtime row of `palm benchmark`
    },
    package_data={"palm": ["configs/*.yaml", "serve/static/*.html", "engine/program_ops.json"]},
    entry_points={
        "console_scripts": [
            "palm=palm.cli.main:main",
            "palm-train=palm.cli.train:cli",
            "palm-eval=palm.cli.eval:cli",
            "palm-predict=palm.cli.predict:cli",
            "palm-serve=palm.cli.serve:cli",
        ]
    },
)
