"""Install palm: `pip install -e ".[cpu]"` (CPU), or Paddle's CUDA wheel from Paddle's own
index first and then `pip install -e .` (see the README's GPU paragraph)."""
from setuptools import find_packages, setup

setup(
    name="palm",
    version="0.1.0",
    description="PaddlePaddle fundus-photo classification: pathologic myopia screening on PALM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["palm", "palm.*", "data_tools", "data_tools.*", "tools"]),
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pandas",
        "scikit-learn",
        "matplotlib",
        "PyYAML",
        "tqdm",
        "openpyxl",
    ],
    extras_require={
        "cpu": ["paddlepaddle>=3.0"],
        "test": ["pytest"],
        "log": ["visualdl"],
        "bench": ["paddle2onnx", "onnxruntime"],  # tools/benchmark.py's ONNX Runtime row
    },
    package_data={"palm": ["../configs/*.yaml"]},
    entry_points={
        "console_scripts": [
            "palm-train=tools.train:cli",
            "palm-eval=tools.eval:cli",
            "palm-predict=tools.predict:cli",
        ]
    },
)
